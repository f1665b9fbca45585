"""int8: a network trained with its convolutions quantised (a recipe's ``quantize: int8``) is exported with
its input ranges, runs in int8 through OpenVINO as --precision int8, and is a candidate of the CPU's measured
choice; without such weights int8 is refused with a reason."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from vsr import zoo
from vsr.engine import Upscaler, autotune, openvino, quantize, select_precision
from vsr.errors import VsrError
from vsr.train.config import load_recipe
from vsr.train.loop import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny  # noqa: E402
from test_train_config import recipe, write_frames  # noqa: E402

SHAPE = (1, 3, 40, 48)


def test_wrapped_convolutions_compute_on_8_bit_inputs_and_weights():
    desc = tiny("compact", nf=8, num_conv=2, upscale=2)
    x = autotune.sample(SHAPE)
    with torch.no_grad():
        ref = desc.model(x)
    found = quantize.calibrate(desc.model, [x])
    assert len(found) == len(quantize.convolutions(desc.model)) == 4
    net = quantize.wrap(desc.model, found).eval()
    with torch.no_grad():
        out = net(x)
        first = net.body[0]
        # the first convolution's input is the picture: on the grid of its range, its weights on 255 levels
        scale, zero = first.fixed
        assert scale == pytest.approx(float(x.max()) / 255, rel=1e-5) and zero == 0
    assert 30 < autotune.psnr(out, ref) < 80  # quantised, and close
    assert quantize.ranges(net) == [(pytest.approx(s), pytest.approx(z)) for s, z in found]
    assert set(quantize.plain_state_dict(net)) == set(tiny("compact", nf=8, num_conv=2, upscale=2).model.state_dict())


@pytest.fixture
def int8_model(tmp_path_factory):
    """A tiny compact network trained for int8 by the trainer, exported with its card."""
    tmp = tmp_path_factory.mktemp("int8")
    write_frames(tmp / "frames")
    cfg = load_recipe(recipe(tmp, **{
        "networks.generator": {"arch": "compact", "params": {"nf": 8, "num_conv": 2, "upscale": 4},
                               "quantize": "int8"},
        "steps": [{"network": "generator", "losses": ["pixel"]}], "total_steps": 4}))
    run = train(cfg, progress=False, export_name="tiny-int8", export_dir=tmp / "model")
    return run


def test_training_with_quantize_exports_weights_with_their_ranges(int8_model, tmp_path):
    card = yaml.safe_load(int8_model.card.read_text())
    path = int8_model.card.parent / card["weights"]
    assert card["int8"] == card["weights"]
    with safe_open(str(path), "pt") as f:
        ranges = json.loads(f.metadata()[quantize.KEY])
        keys = set(f.keys())
    assert len(ranges) == 4 and all(s > 0 and 0 <= z <= 255 for s, z in ranges)
    assert not any(k.endswith(("scale", "zero_point")) for k in keys)  # a plain compact network's weights
    # training continues from a checkpoint with its ranges
    state = torch.load(int8_model.output / "checkpoints" / "latest.pt", weights_only=True)
    assert "body.0.scale" in state["networks"]["generator"]


def test_precision_int8_runs_the_trained_ranges_in_openvino(int8_model, monkeypatch):
    desc = zoo.load_card(zoo.read_card(int8_model.card))
    assert desc.extra[quantize.FILE].endswith(".safetensors")
    x = autotune.sample(SHAPE)
    simulated = quantize.load(desc.model, desc.extra[quantize.FILE])
    with torch.no_grad():
        expected = simulated(x)
    monkeypatch.setattr(openvino, "available", lambda: True)  # conftest runs auto in PyTorch
    e = Upscaler(desc, device="cpu", precision="int8")
    assert e.backend == "openvino" and e.dtype == torch.int8
    assert autotune.psnr(e(x), expected) > 45  # OpenVINO's int8 kernels compute what was trained
    assert e.identity()["int8_sha256"] == zoo.file_sha256(desc.extra[quantize.FILE])
    assert ("openvino", "int8") in autotune.candidates(Upscaler(desc, device="cpu"))


def test_int8_is_refused_where_it_cannot_run(int8_model, monkeypatch):
    monkeypatch.setattr(openvino, "available", lambda: True)
    plain = tiny("compact", nf=8, num_conv=2, upscale=2)
    with pytest.raises(VsrError, match="needs a model trained for it"):
        Upscaler(plain, device="cpu", precision="int8", backend="openvino")
    assert ("openvino", "int8") not in autotune.candidates(Upscaler(plain, device="cpu"))
    desc = zoo.load_card(zoo.read_card(int8_model.card))
    with pytest.raises(VsrError, match="int8 runs through OpenVINO"):
        Upscaler(desc, device="cpu", precision="int8", backend="torch")
    with pytest.raises(VsrError, match="int8 runs on the CPU"):
        select_precision("int8", torch.device("cuda"))
