"""Training checkpoints: atomic files, the newest N kept, exact RNG state, nothing but tensors read back."""
from __future__ import annotations

import pytest
import torch

from vsr.errors import VsrError
from vsr.train import checkpoint as ckpt


class _NotATensor:
    """Something torch.save pickles as a global: a weights_only load refuses it."""


def _state(value: float) -> dict:
    return {"w": torch.full((3,), value), "step": int(value)}


def test_save_writes_the_step_file_and_latest(tmp_path):
    folder = tmp_path / "runs" / "a"  # folders made as needed, and saving again into them works
    for step in (7, 8):
        path = ckpt.save(folder, _state(step), step=step, keep=3)
        assert path == folder / f"step-{step:08d}.pt"
        assert torch.equal(ckpt.load(path)["w"], torch.full((3,), float(step)))
        assert ckpt.load(folder)["step"] == step  # the folder means its latest.pt
    assert sorted(p.name for p in folder.iterdir()) == ["latest.pt", "step-00000007.pt", "step-00000008.pt"]


@pytest.mark.parametrize("keep, kept", [(1, [5]), (2, [4, 5]), (3, [3, 4, 5]), (9, [1, 2, 3, 4, 5]), (0, [5])])
def test_retention_keeps_the_newest(tmp_path, keep, kept):
    """keep=N leaves the N newest step files (0 still leaves the newest); latest.pt is always the last."""
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for step in range(1, 6):
        ckpt.save(tmp_path, _state(step), step=step, keep=keep)
    assert sorted(tmp_path.glob("step-*.pt")) == [tmp_path / f"step-{s:08d}.pt" for s in kept]
    assert ckpt.load(tmp_path / "latest.pt")["step"] == 5 and (tmp_path / "notes.txt").exists()


def test_retention_orders_by_step_not_by_time(tmp_path):
    ckpt.save(tmp_path, _state(100), step=100, keep=2)
    ckpt.save(tmp_path, _state(20), step=20, keep=2)  # an older step written later (a rerun from step 10)
    ckpt.save(tmp_path, _state(30), step=30, keep=2)
    assert [p.name for p in sorted(tmp_path.glob("step-*.pt"))] == ["step-00000030.pt", "step-00000100.pt"]


@pytest.mark.parametrize("fail_on", [1, 2])
def test_interrupted_save_leaves_the_last_good_checkpoint(tmp_path, monkeypatch, fail_on):
    """A save killed while writing (disk full, kill) leaves only a .partial file; every checkpoint a resume
    can find is whole and the previous latest.pt still loads."""
    ckpt.save(tmp_path, _state(1), step=1, keep=5)
    real, calls = torch.save, []

    def dies_midway(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == fail_on:
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half a file")
            raise OSError(28, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError):
        ckpt.save(tmp_path, _state(2), step=2, keep=5)
    monkeypatch.undo()
    assert [p.name.endswith(".partial") for p in calls] == [True] * fail_on
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".partial"))
    assert names == (["latest.pt", "step-00000001.pt"] if fail_on == 1 else
                     ["latest.pt", "step-00000001.pt", "step-00000002.pt"])
    assert ckpt.load(tmp_path)["step"] == 1  # latest.pt was never replaced by a half-written file
    if fail_on == 2:
        assert ckpt.load(tmp_path / "step-00000002.pt")["step"] == 2


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    for where in (tmp_path, tmp_path / "step-00000001.pt", tmp_path / "nothing"):
        with pytest.raises(VsrError) as e:
            ckpt.load(where)
        expected = where / "latest.pt" if where == tmp_path else where
        assert str(e.value) == f"no checkpoint to resume from: {expected} does not exist"


@pytest.mark.parametrize("content", ["pickle", "garbage", "pickle, unsafe loading asked for elsewhere"])
def test_unreadable_checkpoint_is_refused_in_one_line(tmp_path, monkeypatch, content):
    """Only tensors and plain values are read back (weights_only): a pickled object is refused, not run,
    even where the environment asks PyTorch for unsafe loading by default (for some other program)."""
    if "elsewhere" in content:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "latest.pt"
    if content.startswith("pickle"):
        torch.save({"w": torch.ones(1), "x": _NotATensor()}, path)
    else:
        path.write_bytes(b"\x80\x02 not a checkpoint at all")
    with pytest.raises(Exception) as direct:
        torch.load(path, map_location="cpu", weights_only=True)
    first = str(direct.value).splitlines()[0][:160]
    with pytest.raises(VsrError) as e:
        ckpt.load(tmp_path)
    assert str(e.value) == f"cannot read checkpoint {path}: {first}"
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_checkpoint_loads_onto_the_cpu(tmp_path):
    ckpt.save(tmp_path, _state(3), step=3, keep=1)
    assert ckpt.load(tmp_path)["w"].device.type == "cpu"


def test_rng_state_restores_the_same_numbers(tmp_path):
    torch.manual_seed(1234)
    torch.rand(5)
    state = ckpt.rng_state()
    assert set(state) == ({"torch", "cuda"} if torch.cuda.is_available() else {"torch"})
    expected = torch.rand(100)
    torch.manual_seed(99)  # another run's state in between
    ckpt.save(tmp_path, {"rng": state}, step=1, keep=1)
    ckpt.set_rng_state(ckpt.load(tmp_path)["rng"])
    assert torch.equal(torch.rand(100), expected)


def test_rng_state_of_a_gpu_run_restores_on_a_cpu(tmp_path):
    """A checkpoint made where CUDA was present resumes on a machine without it (its torch state only)."""
    torch.manual_seed(5)
    state = {"torch": torch.get_rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)]}
    expected = torch.rand(10)
    torch.manual_seed(6)
    if not torch.cuda.is_available():
        ckpt.set_rng_state(state)
        assert torch.equal(torch.rand(10), expected)
    ckpt.set_rng_state({"torch": state["torch"]})  # and one made without CUDA restores anywhere
    assert torch.equal(torch.rand(10), expected)
