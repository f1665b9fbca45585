"""Switched convolution throughput, forward + backward: the efficient path against a plain convolution of
the same shape and against the naive path (every kernel everywhere), measured in one run.

    python benchmarks/bench_switched.py                     # 64 -> 64 channels, 3x3, breadth 8, 4x64x96
    python benchmarks/bench_switched.py --breadth 16 --device cuda

Prints numbers only: medians of --repeats interleaved rounds after warm-up, and the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsr.arch.switched import SwitchedConv2d  # noqa: E402


def timed(fn, repeats: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) if times else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--breadth", type=int, default=8)
    ap.add_argument("--size", default="4x64x96", help="batch x height x width")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nchw", action="store_true", help="NCHW tensors (default channels_last, as the engine "
                    "and the trainer run networks)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    n, h, w = (int(v) for v in args.size.split("x"))
    c, k = args.channels, args.kernel
    torch.manual_seed(0)
    fmt = torch.contiguous_format if args.nchw else torch.channels_last
    x = torch.randn(n, c, h, w, device=dev).contiguous(memory_format=fmt).requires_grad_(True)
    plain = nn.Conv2d(c, c, k, 1, k // 2).to(dev, memory_format=fmt)
    switched = SwitchedConv2d.from_conv(plain, args.breadth).to(memory_format=fmt)
    with torch.no_grad():  # kernels apart and decisive selectors: every kernel gets pixels
        switched.weight.add_(torch.randn_like(switched.weight) * 0.05)
        switched.selector.weight.mul_(8)
    used = len(switched.routing(x)[0].unique())

    def step(layer):
        def run():
            x.grad = None
            layer.zero_grad(set_to_none=True)
            layer(x).square().mean().backward()
        return run

    def naive_step():
        switched.naive = True
        try:
            step(switched)()
        finally:
            switched.naive = False

    # interleaved rounds, so that a noisy moment of a shared machine hits the three alike
    runs = {"plain": step(plain), "fast": step(switched), "naive": naive_step}
    times = {name: [] for name in runs}
    for name, run in runs.items():  # warm-up
        timed(run, 0, dev)
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(timed(run, 1, dev, warmup=0))
    t_plain, t_fast, t_naive = (statistics.median(times[k]) for k in ("plain", "fast", "naive"))
    mpx = n * h * w / 1e6
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads; {n}x{c}x{h}x{w}, "
          f"{k}x{k}, {'NCHW' if args.nchw else 'channels_last'}, breadth {args.breadth} ({used} kernels in use); "
          f"forward+backward, median of {args.repeats}")
    for name, t in (("plain conv", t_plain), ("switched (efficient)", t_fast), ("switched (naive)", t_naive)):
        print(f"  {name:<22} {t * 1e3:8.1f} ms  {mpx / t:7.2f} Mpx/s")
    print(f"efficient / plain throughput: {t_plain / t_fast:.2f}; efficient vs naive: {t_naive / t_fast:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
