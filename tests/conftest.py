from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vsr import arch, weights
from vsr.errors import VsrError

# tiny versions of every registered architecture (4-16 channels, 1-2 blocks)
TINY = {
    "rrdb": [dict(nf=8, nb=1, gc=4, scale=4), dict(nf=8, nb=2, gc=4, scale=2), dict(nf=8, nb=1, gc=4, scale=1)],
    "rrdb-recurrent": [dict(nf=8, nb=1, gc=4, scale=4), dict(nf=8, nb=1, gc=4, scale=2)],
    "compact": [dict(nf=8, num_conv=2, upscale=4), dict(nf=8, num_conv=1, upscale=2),
                dict(nf=8, num_conv=1, upscale=4, out_scale=0.75)],
    "srflow": [dict(nf=8, nb=3, gc=4, K=1, hidden=8, cond_blocks=2),
               dict(scale=8, L=4, nf=8, nb=2, gc=4, K=1, hidden=8, cond_blocks=1)],
    "switched": [dict(nf=8, num_conv=2, upscale=4, breadth=4)],
}
assert set(TINY) == {a.name for a in arch.ARCHS}, "every registered architecture needs a tiny config"
TINY_CASES = [(name, p) for name, ps in TINY.items() for p in ps]


def tiny(name: str, seed: int = 0, **params) -> arch.ModelDescriptor:
    torch.manual_seed(seed)
    desc = arch.build(name, **params)
    with torch.no_grad():  # non-trivial PReLU slopes and biases
        for p in desc.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    desc.model.eval()
    return desc


def pytest_report_header(config) -> list[str]:
    """The ffmpeg binary the media tests run against (VSR_FFMPEG picks one) and its version, in every test log:
    `-q` hides the header, so the line is also written at the start of the run (pytest_sessionstart)."""
    from vsr.video import ffmpeg

    try:
        exe = ffmpeg.ffmpeg_exe()
        found = ffmpeg.describe(exe) + (" (the bundled one)" if exe == ffmpeg.bundled_exe() else "")
    except VsrError as e:  # every media test will say the same
        found = str(e)
    return [f"ffmpeg: {found}; VSR_FFMPEG={os.environ.get(ffmpeg.ENV) or 'unset'}"]


def pytest_sessionstart(session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.get_verbosity() < 0:
        reporter.write_line(pytest_report_header(session.config)[0])


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Converted weights and user models go to a temporary place for the test run, never the user's."""
    monkeypatch.setenv("VSR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("VSR_MODELS", str(tmp_path_factory.getbasetemp() / "user-models"))


@pytest.fixture(autouse=True)
def _fp32_auto_precision(monkeypatch):
    """`auto` precision computes fp32 on the CPU in tests, whether or not this CPU has native bf16, so exact
    comparisons hold on every machine; tests of bf16 ask for it by name."""
    monkeypatch.setattr("vsr.engine.device.cpu_has_native_bf16", lambda: False)


@pytest.fixture(autouse=True)
def _torch_auto_backend(monkeypatch):
    """`auto` runs networks in PyTorch in tests, whether or not OpenVINO is installed; tests of the OpenVINO
    backend ask for it by name."""
    monkeypatch.setattr("vsr.engine.openvino.available", lambda: False)


@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    """A tiny x2 compact network saved as safetensors."""
    path = tmp_path / "tiny-x2.safetensors"
    weights.save(tiny("compact", nf=8, num_conv=1, upscale=2), path)
    return path


@pytest.fixture
def one_thread():
    """One CPU thread: bitwise comparisons between batch sizes, and a fair share of a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
