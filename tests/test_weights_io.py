"""Reading and writing weights: strict fit, the EMA weights preferred, nothing but tensors read, atomic
writes, and errors of one line that name the file."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from vsr import weights
from vsr.errors import VsrError

from conftest import tiny


class _Global:
    def __init__(self):
        self.x = 1


def rrdb_sd(seed: int = 0) -> dict[str, torch.Tensor]:
    return tiny("rrdb", seed=seed, nf=8, nb=1, gc=4, scale=4).model.state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("extra, missing", [({"extra.weight": torch.zeros(2)}, []), ({}, ["conv_hr.bias"])])
def test_loading_is_strict(extra, missing):
    """A state dict with a tensor more, or one fewer, than the network it looks like is refused."""
    sd = {k: v for k, v in rrdb_sd().items() if k not in missing} | extra
    with pytest.raises(VsrError) as e:
        weights.detect(sd, "net.pth")
    assert str(e.value) == (f"net.pth looks like rrdb but does not fit it: missing {missing}, "
                            f"unexpected {list(extra)}")


def test_loaded_network_is_ready_for_inference():
    desc = weights.detect(rrdb_sd(1))
    assert desc.arch == "rrdb" and not desc.model.training
    assert not any(p.requires_grad for p in desc.model.parameters())
    assert same(desc.model.state_dict(), rrdb_sd(1))


def test_ema_weights_are_preferred_to_the_raw_ones():
    ema, raw = rrdb_sd(1), rrdb_sd(2)
    for obj in ({"params": raw, "params_ema": ema}, {"params_ema": ema, "params": raw, "state_dict": raw},
                {"model": ema, "generator": raw}, {"generator": ema, "step": 3}):
        assert same(weights.unwrap(obj), ema)


def test_unwrap_drops_non_tensors_and_a_common_module_prefix():
    sd = rrdb_sd()
    wrapped = {f"module.{k}": v for k, v in sd.items()} | {"module.step": 5}
    assert same(weights.unwrap({"state_dict": wrapped}), sd)
    mixed = {"module.a": torch.ones(1), "b": torch.zeros(1)}  # not every key has it: kept as is
    assert same(weights.unwrap(mixed), mixed)
    assert same(weights.unwrap({"params": "not a dict", "w": torch.ones(1)}), {"w": torch.ones(1)})


@pytest.mark.parametrize("obj, what", [
    ([torch.ones(1)], "holds no state dict"), ({}, "holds no state dict"), ({"params": {}}, "holds no state dict"),
    ({"a": 1, "b": "x"}, "holds no tensors"),
])
def test_unwrap_refuses_what_holds_no_weights(obj, what):
    with pytest.raises(VsrError) as e:
        weights.unwrap(obj, "w.pth")
    assert str(e.value).startswith(f"w.pth {what}")


def test_unknown_architecture_names_the_first_keys_and_the_known_ones():
    sd = {f"layer{i}.weight": torch.zeros(1) for i in range(6)}
    with pytest.raises(VsrError) as e:
        weights.detect(sd, "x.pth")
    known = ", ".join(a.name for a in weights.ARCHS)
    assert str(e.value) == ("x.pth: unknown architecture (keys layer0.weight, layer1.weight, layer2.weight, "
                            f"layer3.weight, ...); supported: {known}")


def test_impossible_network_is_a_one_line_error():
    sd = tiny("compact", nf=8, num_conv=1, upscale=2).model.state_dict()
    sd["body.4.weight"] = torch.zeros(5 * 3, 8, 3, 3)  # 15 outputs: no r*r*3
    sd["body.4.bias"] = torch.zeros(15)
    with pytest.raises(VsrError) as e:
        weights.detect(sd, "odd.pth")
    assert str(e.value).startswith("odd.pth: compact net: last conv has 15 outputs")
    assert str(e.value).endswith("does not describe a usable network")


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".ckpt"])
def test_every_format_under_any_name(tmp_path, suffix):
    """Zip and legacy PyTorch files and safetensors are recognised by their bytes, not their name."""
    sd = rrdb_sd(3)
    for kind in ("zip", "legacy", "safetensors"):
        path = tmp_path / f"{kind}{suffix}"
        if kind == "safetensors":
            weights.save(sd, tmp_path / "w.safetensors")
            os.replace(tmp_path / "w.safetensors", path)
        else:
            torch.save(sd, path, _use_new_zipfile_serialization=kind == "zip")
        assert same(weights.read_state_dict(path), sd), kind


def test_legacy_pickle_loads_without_warnings(tmp_path, recwarn):
    path = tmp_path / "old.pth"
    torch.save({"params": rrdb_sd()}, path, _use_new_zipfile_serialization=False)
    assert weights.load(path).arch == "rrdb"
    assert not [w for w in recwarn if "weights" in str(w.message).lower() or "pickle" in str(w.message).lower()]


@pytest.mark.parametrize("unsafe_default", [False, True])
def test_refusal_names_the_offending_global(tmp_path, monkeypatch, unsafe_default):
    """Refused even where the environment asks PyTorch for unsafe loading by default (for another program)."""
    if unsafe_default:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "evil.pth"
    torch.save({"conv_first.weight": torch.zeros(1), "x": _Global()}, path)
    with pytest.raises(Exception) as direct:
        torch.load(path, map_location="cpu", weights_only=True)
    lines = [ln.strip() for ln in str(direct.value).splitlines() if ln.strip()]
    first = next(ln for ln in lines if "GLOBAL" in ln)
    with pytest.raises(VsrError) as e:
        weights.read_state_dict(path)
    assert str(e.value) == (f"refusing to load {path}: it holds more than tensors and could run code "
                            f"({first[:120]}); convert it to .safetensors with the tool that made it")
    assert "_Global" in str(e.value) and e.value.__cause__ is None


def test_a_pickle_refused_for_another_reason_names_it(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"\x80\x02 cut")  # a legacy pickle that is not one
    with pytest.raises(Exception) as direct:
        torch.load(path, map_location="cpu", weights_only=True)
    lines = [ln.strip() for ln in str(direct.value).splitlines() if ln.strip()]
    assert not any("GLOBAL" in ln for ln in lines)
    with pytest.raises(VsrError) as e:
        weights.read_state_dict(path)
    assert str(e.value) == (f"refusing to load {path}: it holds more than tensors and could run code "
                            f"({lines[0][:120]}); convert it to .safetensors with the tool that made it")


@pytest.mark.parametrize("content", [b"PK\x03\x04 not really a zip", b"garbage bytes",
                                     b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":"])  # safetensors, cut
def test_unreadable_file_is_one_line(tmp_path, content):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(Exception) as direct:
        if content.startswith(b"PK"):
            torch.load(path, map_location="cpu", weights_only=True)
        else:
            load_file(str(path))
    with pytest.raises(VsrError) as e:
        weights.read_state_dict(path)
    assert str(e.value) == f"cannot read weights from {path}: {str(direct.value).splitlines()[0][:160]}"


def test_a_safetensors_file_is_never_taken_for_a_pickle(tmp_path):
    """Its first byte is the header size: 0x80, a pickle's first byte, for one size in 256; the name decides."""
    sd = {"w": torch.ones(2)}
    for n in range(64):
        path = tmp_path / f"w{n}.safetensors"
        weights.save(sd, path, metadata={"pad": "x" * n})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no header size of 0x80 mod 256 found")
    assert same(weights.read_state_dict(path), sd)


def test_what_holds_no_tensors_names_the_file(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"step": 3}, path)
    with pytest.raises(VsrError) as e:
        weights.read_state_dict(path)
    assert str(e.value) == f"{path} holds no tensors"
    with pytest.raises(VsrError) as e:
        weights.unwrap({})
    assert str(e.value).startswith("checkpoint holds no state dict")


@pytest.mark.parametrize("extra, missing", [(5, 0), (0, 5)])
def test_a_misfit_names_the_first_three(extra, missing):
    sd = rrdb_sd()
    gone = [k for k in sd if k.endswith(".bias") and not k.startswith("body.")][:missing]  # in the network's order
    sd = {k: v for k, v in sd.items() if k not in gone} | {f"extra{i}.weight": torch.zeros(1) for i in range(extra)}
    with pytest.raises(VsrError) as e:
        weights.detect(sd)
    assert str(e.value) == (f"state dict looks like rrdb but does not fit it: missing {gone[:3]}, "
                            f"unexpected {[f'extra{i}.weight' for i in range(extra)][:3]}")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(VsrError) as e:
        weights.read_state_dict(tmp_path / "none.pth")
    assert str(e.value) == f"weights file {tmp_path / 'none.pth'} does not exist"
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(VsrError) as e:
        weights.read_state_dict(str(tmp_path / "empty.pth"))
    assert str(e.value) == f"weights file {tmp_path / 'empty.pth'} is empty"


def test_load_applies_overrides(tmp_path):
    path = tmp_path / "x4.safetensors"
    weights.save(tiny("compact", nf=8, num_conv=1, upscale=4), path)
    assert weights.load(path).scale == 4 and weights.load(path, out_scale=0.5).scale == 2


def test_save_converts_floats_only_and_keeps_metadata(tmp_path):
    sd = {"w": torch.rand(4, 3).t(), "n": torch.arange(3), "h": torch.rand(2).half()}  # w not contiguous
    path = tmp_path / "a" / "b" / "w.safetensors"
    weights.save(sd, path, dtype=torch.float16, metadata={"k": "v"})
    back = load_file(str(path))
    assert back["w"].dtype == torch.float16 and torch.equal(back["w"], sd["w"].half())
    assert back["n"].dtype == torch.int64 and torch.equal(back["n"], sd["n"])
    weights.save(sd, path)  # no dtype: as they are, over the old file
    back = load_file(str(path))
    assert back["w"].dtype == torch.float32 and torch.equal(back["w"], sd["w"]) and back["h"].dtype == torch.half
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert f.metadata() is None
    weights.save(sd, path, metadata={"k": "v"})
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"k": "v"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]


def test_save_of_a_network_writes_its_weights(tmp_path):
    desc = tiny("compact", nf=8, num_conv=1, upscale=2)
    weights.save(desc, tmp_path / "n.safetensors")
    assert same(load_file(str(tmp_path / "n.safetensors")), desc.model.state_dict())


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    weights.save(rrdb_sd(1), path)
    before = path.read_bytes()
    written = []

    def dies(sd, filename, metadata=None):
        written.append(filename)
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(weights, "save_file", dies)
    with pytest.raises(OSError):
        weights.save(rrdb_sd(2), path)
    assert path.read_bytes() == before
    assert written == [str(path) + ".partial"]
