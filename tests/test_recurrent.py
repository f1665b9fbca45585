"""The frame-recurrent RRDB: built from a single-frame RRDB it starts out identical to it, its weights
are recognised as its own, the engine runs it through the recurrent contract, and the motion
compensation moves pixels where they belong."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vsr import arch, weights
from vsr.arch import recurrent
from vsr.engine import Upscaler

from conftest import tiny

TINY_RRDB = dict(nf=8, nb=1, gc=4)


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random texture (1, 3, h, w) in [0, 1]: something optical flow can lock on to."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h + 8, w + 8), mode="bicubic", align_corners=False).clamp(0, 1)


def moving_frames(n: int, h: int = 24, w: int = 32) -> torch.Tensor:
    """n frames (n, 3, h, w) of a texture panning 1 px right and 1 px down per frame."""
    big = texture(h + n, w + n)
    return torch.cat([big[:, :, n - i:n - i + h, n - i:n - i + w] for i in range(n)])


@pytest.mark.parametrize("scale", [4, 2])
def test_starts_identical_to_the_single_frame_rrdb(scale):
    single = tiny("rrdb", **TINY_RRDB, scale=scale)
    desc = arch.from_rrdb(single)
    assert desc.arch == "rrdb-recurrent" and desc.contract == "recurrent" and desc.scale == scale
    assert desc.model.conv_first.in_channels == {4: 3, 2: 3 * 4}[scale]
    assert desc.model.conv_prev.in_channels == {4: 3 * 16, 2: 3 * 4 * 4}[scale]
    g = torch.Generator().manual_seed(1)
    x, prev_x = torch.rand(2, 1, 3, 16, 24, generator=g)
    with torch.no_grad():
        ref = single.model(x)
        assert torch.equal(desc.model(x, None, None), ref)
        for _ in range(3):  # whatever the previous output was: bit for bit (so within 1e-6 too)
            prev_y = torch.rand(1, 3, 16 * scale, 24 * scale, generator=g) * 4 - 2
            assert torch.equal(desc.model(x, prev_x, prev_y), ref)


def test_the_gate_blends_in_the_warped_previous_output():
    """Closed (as built from an RRDB), the output is the trunk's; fully open, it is the previous output
    warped onto the frame; the new weights are the same whenever the same RRDB is converted."""
    single = tiny("rrdb", **TINY_RRDB, scale=4)
    a, b = arch.from_rrdb(single).model, arch.from_rrdb(single).model
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert a.gate[0].weight.abs().sum() > 0 and a.gate[2].weight.abs().sum() == 0
    a.motion = "none"  # no motion: the warped previous output is the previous output itself
    x = moving_frames(1)
    prev_y = torch.rand(1, 3, 96, 128)
    a.train().requires_grad_(True)
    a(x, x, prev_y).sub(prev_y).abs().mean().backward()  # closed, the gate still learns to open
    assert a.gate[2].bias.grad.abs().sum() > 0 and a.gate[2].weight.grad.abs().sum() > 0
    with torch.no_grad():
        trunk = single.model(x)
        a.gate[2].bias.fill_(10.0)  # clamped to 1: take the previous output
        torch.testing.assert_close(a(x, x, prev_y), prev_y, rtol=0, atol=1e-6)
        a.gate[2].bias.fill_(0.5)  # half and half
        torch.testing.assert_close(a(x, x, prev_y), (trunk + prev_y) / 2, rtol=0, atol=1e-5)


def test_only_rrdb_models_convert():
    with pytest.raises(ValueError, match="expected a single-frame rrdb"):
        arch.from_rrdb(tiny("compact", nf=8, num_conv=1, upscale=2))


def test_state_dict_round_trip_and_detection(tmp_path):
    single = tiny("rrdb", **TINY_RRDB, scale=4)
    desc = tiny("rrdb-recurrent", **TINY_RRDB, scale=4)  # random weights: the previous output matters
    weights.save(desc, tmp_path / "rec.safetensors")
    weights.save(single, tmp_path / "single.safetensors")
    loaded = weights.load(tmp_path / "rec.safetensors")
    assert loaded.arch == "rrdb-recurrent" and loaded.params == desc.params
    assert loaded.contract == "recurrent" and loaded.context_frames == recurrent.CONTEXT_FRAMES
    assert weights.load(tmp_path / "single.safetensors").arch == "rrdb"  # plain RRDB files stay plain
    assert recurrent.params_from_state_dict(single.model.state_dict()) is None
    x, prev_x = moving_frames(2)[:1], moving_frames(2)[1:]
    prev_y = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        y = desc.model(x, prev_x, prev_y)
        assert torch.equal(loaded.model(x, prev_x, prev_y), y)
        assert not torch.allclose(y, desc.model(x, None, None))


def run(engine: Upscaler, frames: torch.Tensor, batch: int, resets: list[bool]) -> torch.Tensor:
    session = engine.session()
    return torch.cat([session(frames[i:i + batch], indices=list(range(i, min(i + batch, len(frames)))),
                              resets=resets[i:i + batch]) for i in range(0, len(frames), batch)])


def test_the_engine_runs_it_frame_after_frame(one_thread):
    desc = tiny("rrdb-recurrent", **TINY_RRDB, scale=4)
    frames = moving_frames(5)
    resets = [True, False, False, False, False]
    out = run(Upscaler(desc, device="cpu", precision="fp32", tile=0), frames, 2, resets)
    assert out.shape == (5, 3, 96, 128)
    with torch.no_grad():  # by hand: each frame with the previous input and output
        prev_x = prev_y = None
        for i in range(5):
            y = desc.model(frames[i:i + 1], prev_x, prev_y)
            assert (out[i:i + 1] - y).abs().max() < 1e-5, i
            prev_x, prev_y = frames[i:i + 1], y
        assert not torch.allclose(out[3:4], desc.model(frames[3:4], None, None), atol=1e-3)  # it remembers
    again = run(Upscaler(desc, device="cpu", precision="fp32", tile=0), frames, 3, resets)
    assert torch.equal(out, again)  # deterministic, whatever the batch
    cut = run(Upscaler(desc, device="cpu", precision="fp32", tile=0), frames, 2, [True, False, True, False, False])
    assert torch.equal(cut[2:], run(Upscaler(desc, device="cpu", precision="fp32", tile=0), frames[2:], 2,
                                    [True, False, False]))


def test_warp_is_exact_for_an_integer_shift():
    img = torch.rand(1, 3, 20, 30)
    flow = torch.zeros(1, 2, 20, 30)
    flow[:, 0], flow[:, 1] = 3, -2  # out[y, x] = img[y - 2, x + 3]
    out = recurrent.warp(img, flow)
    assert torch.equal(out[:, :, 2:, :-3], img[:, :, :-2, 3:])
    assert torch.equal(out[:, :, :2, :-3], img[:, :, :1, 3:].expand(1, 3, 2, 27))  # the border repeated
    assert torch.equal(recurrent.warp(img, torch.zeros_like(flow)), img)
    # an LR flow of d pixels is s * d HR pixels everywhere
    hr = recurrent.upscale_flow(flow, 4)
    assert hr.shape == (1, 2, 80, 120) and torch.equal(hr[:, 0], torch.full((1, 80, 120), 12.0))
    assert torch.equal(hr[:, 1], torch.full((1, 80, 120), -8.0))


def test_the_motion_between_lr_frames_is_found():
    frames = moving_frames(2, 48, 64)  # frame 1 = frame 0 moved 1 px right and 1 px down
    flow = recurrent.lr_flow(frames[1:], frames[:1])[0]  # frame 1's pixels come from 1 px up-left
    inner = flow[:, 8:-8, 8:-8]
    assert torch.allclose(inner.median(dim=-1).values.median(dim=-1).values, torch.tensor([-1.0, -1.0]), atol=0.1)
    warped = recurrent.warp(frames[:1], flow[None])
    assert (warped - frames[1:])[:, :, 8:-8, 8:-8].abs().mean() < 0.01
    assert (frames[:1] - frames[1:])[:, :, 8:-8, 8:-8].abs().mean() > 0.03  # while unwarped it is far off
