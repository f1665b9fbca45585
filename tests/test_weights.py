import pickle

import pytest
import torch

from vsr import weights, zoo
from vsr.errors import VsrError

from conftest import tiny


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create the marker file when unpickled


def test_safetensors_roundtrip_keeps_parameters_not_in_shapes(tmp_path):
    desc = tiny("compact", nf=8, num_conv=1, upscale=4, out_scale=0.5)
    path = tmp_path / "m.safetensors"
    weights.save(desc, path, metadata={"vsr.params": '{"out_scale": 0.5}'})
    loaded = zoo.load_path(path)
    assert loaded.scale == 2.0
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), desc.model(x))


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"params_ema": sd, "params": {}},
    lambda sd: {"params": sd},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
])
def test_pth_containers_and_prefixes(tmp_path, wrap):
    desc = tiny("rrdb", nf=8, nb=1, gc=4, scale=2)
    path = tmp_path / "m.pth"
    torch.save(wrap(desc.model.state_dict()), path)
    loaded = weights.load(path)
    assert loaded.arch == "rrdb" and loaded.scale == 2
    for k, v in desc.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv_first.weight": torch.zeros(1), "x": _RunsCode(marker)}, path)
    with pytest.raises(VsrError, match="refusing to load"):
        weights.load(path)
    assert not marker.exists()
    # a legacy (non-zip) pickle too
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(VsrError):
        weights.load(path)
    assert not marker.exists()


def test_unknown_architecture_and_broken_files(tmp_path):
    path = tmp_path / "other.safetensors"
    weights.save({"encoder.layer.weight": torch.zeros(4, 4)}, path)
    with pytest.raises(VsrError, match="unknown architecture"):
        weights.load(path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(VsrError, match="empty"):
        weights.load(empty)
    good = tmp_path / "good.safetensors"
    weights.save(tiny("compact", nf=8, num_conv=1, upscale=2), good)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(VsrError, match="cannot read"):
        weights.load(cut)


def test_wrong_shape_is_reported():
    sd = tiny("rrdb", nf=8, nb=1, gc=4, scale=4).model.state_dict()
    sd["conv_hr.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(VsrError, match=r"conv_hr.weight has shape \(8, 8, 1, 1\), expected \(8, 8, 3, 3\)"):
        weights.detect(sd)
