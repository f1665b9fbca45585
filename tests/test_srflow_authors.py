"""SRFlow checkpoints in the authors' layout compute what the authors' code computes. Their RRDBNet is not
ESRGAN's in two places (its trunk output, and the upsampling features taken after the activation); the
conditioning is computed here step by step from the state dict, in both conventions, and compared with
the network's. The flow itself is compared with theirs layer by layer in test_srflow.py."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsr import images, weights, zoo

from test_srflow import REFERENCE, reference_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

# scale, the trunk blocks whose outputs are appended (from the authors' configurations), and the LR
# scale 2^k of each flow level's conditioning (level 1 is the finest)
RELEASED = {"srflow-df2k-x4": (4, [1, 8, 15, 22], {1: 1, 2: 0, 3: -1}),
            "srflow-celeba-x8": (8, [1, 3, 5, 7], {1: 2, 2: 1, 3: 0, 4: -1})}


def _conv(sd, x, name, act=False):
    y = F.conv2d(x, sd[f"RRDB.{name}.weight"], sd[f"RRDB.{name}.bias"], padding=1)
    return F.leaky_relu(y, 0.2) if act else y


def rrdbnet_features(sd, lr, scale, blocks, *, authors):
    """({k: the feature at LR * 2^k}, {block: its output}, the RRDBNet's own SR image), from the state dict
    in the authors' layout, one convolution at a time. ``authors``: their RRDBNet; else ESRGAN's."""
    first = fea = _conv(sd, lr, "conv_first")
    outputs = {}
    for b in range(1 + max(int(k.split(".")[2]) for k in sd if k.startswith("RRDB.RRDB_trunk."))):
        x = fea
        for r in (1, 2, 3):  # residual dense blocks: five dense convs, the last one scaled by 0.2
            dense = [x]
            for c in (1, 2, 3, 4):
                dense.append(_conv(sd, torch.cat(dense, 1), f"RRDB_trunk.{b}.RDB{r}.conv{c}", act=True))
            x = x + 0.2 * _conv(sd, torch.cat(dense, 1), f"RRDB_trunk.{b}.RDB{r}.conv5")
        fea = fea + 0.2 * x
        outputs[b] = fea
    trunk = (fea if authors else first) + _conv(sd, fea, "trunk_conv")
    feats = {0: trunk, -1: F.interpolate(trunk, scale_factor=0.5, mode="bilinear", align_corners=False)}
    x = trunk
    for k in range(1, int(math.log2(scale)) + 1):
        up = _conv(sd, F.interpolate(x, scale_factor=2, mode="nearest"), f"upconv{k}")
        x = F.leaky_relu(up, 0.2)
        feats[k] = x if authors else up
    return feats, {b: outputs[b] for b in blocks}, _conv(sd, _conv(sd, x, "HRconv", act=True), "conv_last")


def _close(a, b):
    return float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


@pytest.mark.parametrize("name", RELEASED)
def test_the_authors_layout_conditions_the_flow_as_their_rrdbnet(name):
    scale, blocks, level_k = RELEASED[name]
    sd, _ = reference_state_dict(name)
    lr = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(2))
    theirs = weights.detect(dict(sd))
    assert theirs.params["authors_rrdb"] is True
    ours = weights.detect(dict(sd), authors_rrdb=False)  # the same weights in ESRGAN's conventions
    with torch.no_grad():
        for model, authors in ((theirs.model, True), (ours.model, False)):
            feats, appended, sr = rrdbnet_features(sd, lr, scale, blocks, authors=authors)
            cond = model.conditioning(lr)[0]
            assert sorted(cond) == sorted(level_k)
            for level, k in level_k.items():
                size = feats[k].shape[-2:]
                extra = [F.interpolate(appended[b], size=size, mode="nearest") for b in blocks]
                assert _close(cond[level], torch.cat([feats[k], *extra], 1)), (authors, level)
            assert _close(model.encoder.sr(lr), sr), authors
        # the two conventions differ where they should: the trunk (LR level) and the upsampled levels
        a, b = theirs.model.conditioning(lr)[0], ours.model.conditioning(lr)[0]
        for level, k in level_k.items():
            if k >= 0:
                assert float((a[level] - b[level]).abs().max()) > 0.1 * float(a[level].abs().max()), level


@pytest.mark.parametrize("name", RELEASED)
def test_a_resaved_authors_checkpoint_keeps_their_conventions_and_round_trips(tmp_path, name):
    scale = RELEASED[name][0]
    desc = weights.detect(reference_state_dict(name)[0])
    path = tmp_path / "resaved.safetensors"
    weights.save(desc, path, metadata={"vsr.params": json.dumps(desc.params)})
    again = zoo.load_path(path)
    assert again.params == desc.params and again.params["authors_rrdb"] is True
    hr = torch.rand(1, 3, 8 * scale, 12 * scale, generator=torch.Generator().manual_seed(3))
    lr = F.avg_pool2d(hr, scale)
    with torch.no_grad():
        mean = desc.model.reverse(lr, [torch.zeros(1, *s) for s in desc.model.latent_shapes(8, 12)])
        assert torch.equal(again.model.reverse(lr, [torch.zeros(1, *s) for s in again.model.latent_shapes(8, 12)]),
                           mean)
        back = again.model.reverse(lr, again.model.encode(hr, lr))
    assert 10 * math.log10(1 / float(((back - hr) ** 2).mean())) >= 60
    # without its vsr.params the file is read in our own conventions: the metadata is what keeps them
    assert weights.load(path).params["authors_rrdb"] is False


def test_the_shipped_srflow_keeps_esrgan_conventions_and_round_trips():
    desc, _ = zoo.resolve("srflow")
    assert desc.params["authors_rrdb"] is False
    photo = REFERENCE.parent / "data" / "photos" / "plasma-Path.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not found")
    # a photograph: noise is far from what the flow was trained on, and its reverse pass is not finite there
    crop = images.read_image(photo)[200:264, 300:396].astype(np.float32) / 255
    hr = torch.from_numpy(crop).permute(2, 0, 1)[None].contiguous()
    lr = F.avg_pool2d(hr, 4)
    with torch.no_grad():
        back = desc.model.reverse(lr, desc.model.encode(hr, lr))
    assert 10 * math.log10(1 / float(((back - hr) ** 2).mean())) >= 60
