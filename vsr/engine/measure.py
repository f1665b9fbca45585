"""Measuring the engine: timed medians, the device's matrix-multiply peak, and the arithmetic a network does.

Used by `vsr bench`, the projection of a video's time, and the benchmarks, so that they all count the same way.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import VsrError


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done rather than when it was queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_seconds(fn: Callable[[], object], runs: int, *, device: torch.device | None = None,
                   warmup: int = 1) -> float:
    """The median wall time of ``runs`` calls of ``fn`` after ``warmup`` untimed ones (the first call of a
    shape builds kernels: oneDNN primitives, cuDNN plans)."""
    device = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(runs, 1)):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_size(device: torch.device) -> int:
    """A square matrix side big enough to keep the device's arithmetic units busy: a GPU needs far more
    work per call than a CPU before launch overhead stops mattering."""
    return 8192 if device.type == "cuda" else 2048


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, *, runs: int = 5, n: int | None = None) -> float:
    """The machine's practical peak in ``dtype``: GFLOP/s of a large square matrix multiply (2 n^3 FLOP),
    the median of ``runs`` timed calls. Convolutions are lowered to the same GEMM kernels, so a network's
    GFLOP/s over this is how much of the hardware it uses."""
    n = n or matmul_size(device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    # fp32 convolutions on CUDA may use TF32 tensor cores (cudnn.allow_tf32, on by default) while matrix
    # products do not by default: the peak is taken with what the convolutions are allowed
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    try:
        with torch.inference_mode():
            seconds = median_seconds(lambda: a @ b, runs, device=device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * n ** 3 / seconds / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of the convolutions and matrix products ``fn`` runs, counted at the
    operator level: this also sees convolutions a module calls as functions (a switched layer's grouped
    matrix products, a recurrent network's split first convolution, a flow's 1x1 invertible convolutions),
    which hooks on ``nn.Conv2d`` / ``nn.Linear`` would miss. Elementwise work is not counted."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def check_precision_runs(dtype: torch.dtype, device: torch.device) -> None:
    """Refuse in one line a precision the device has no kernels for (rather than a traceback mid-run)."""
    try:
        x = torch.zeros(1, 3, 8, 8, device=device, dtype=dtype)
        w = torch.zeros(4, 3, 3, 3, device=device, dtype=dtype)
        torch.nn.functional.conv2d(x, w, padding=1)
        m = torch.zeros(8, 8, device=device, dtype=dtype)
        m @ m
        synchronize(device)
    except (RuntimeError, TypeError) as e:
        name = str(dtype).removeprefix("torch.")
        raise VsrError(f"this {device.type} device cannot run {name} ({' '.join(str(e).split())[:80]}); "
                       "use another --precision") from None
