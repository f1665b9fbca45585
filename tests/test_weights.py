import json
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


def test_average_is_the_weighted_mean_of_one_networks_fine_tunes(tmp_path, capsys):
    from vsr.cli import main

    # x2 by an x4 network's output halved (realesr-animevideov3-x2's layout): not visible in the tensors
    a, b = (tiny("compact", nf=8, num_conv=1, upscale=4, out_scale=0.5) for _ in range(2))
    with torch.no_grad():
        for p in b.model.parameters():
            p.add_(torch.randn_like(p))
    for name, desc in (("a", a), ("b", b)):
        weights.save(desc, tmp_path / f"{name}.safetensors", metadata={"vsr.params": json.dumps(desc.params)})
    out = tmp_path / "soup.safetensors"
    assert main(["average", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "--weights", "1", "3", "-o", str(out)]) == 0
    soup = zoo.resolve(str(out))[0]
    assert soup.scale == 2 and soup.params == a.params
    for k, v in soup.model.state_dict().items():
        expected = 0.25 * a.model.state_dict()[k] + 0.75 * b.model.state_dict()[k]
        assert torch.allclose(v, expected.half().float(), atol=1e-3), k
    other = tmp_path / "other.safetensors"
    weights.save(tiny("compact", nf=16, num_conv=1, upscale=2), other)
    capsys.readouterr()
    for argv, message in (([str(out), str(other)], "is not the same network as"),
                          ([str(out), str(other), "--weights", "1"], "1 weights for 2 models"),
                          ([str(out), str(out)], "is one of the models")):
        dst = str(out) if message == "is one of the models" else str(tmp_path / "x.safetensors")
        assert main(["average", *argv, "-o", dst]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
