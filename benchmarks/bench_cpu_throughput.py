"""realesrgan-x4plus throughput on the CPU as achieved GFLOP/s, next to the machine's peak.

Peak = a large square matrix multiply in the same precision, measured in the same run; the network's
arithmetic is counted at the operator level on the crop itself (vsr.engine.measure, as `vsr bench`
does), about 35.8 MFLOP per input pixel for RRDBNet x4. Compares NCHW with channels_last. Prints medians
of several runs.

    python benchmarks/bench_cpu_throughput.py [--size 128] [--runs 5] [--precision fp32 bf16]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from vsr import images, zoo
from vsr.engine import PRECISIONS, Upscaler
from vsr.engine.measure import count_flops, matmul_peak_gflops, matmul_size, median_seconds


def real_crop(size: int) -> np.ndarray:
    data = Path(os.environ.get("VSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    photo = data / "photos" / "plasma-Path.jpg"
    if photo.is_file():
        img = images.read_image(photo)
        h, w = img.shape[:2]
        return img[h // 2:h // 2 + size, w // 2:w // 2 + size]
    print(f"({photo} not found: using a generated image)")
    from vsr.demo import make_scene
    return make_scene(size * 2, size * 2)[:size, :size]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128, help="input crop side in pixels")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    desc, _ = zoo.resolve("realesrgan-x4plus")
    crop = real_crop(args.size)
    for precision in args.precision:
        measure(desc, crop, precision, args.runs)


def measure(desc, crop: np.ndarray, precision: str, runs: int) -> None:
    cpu = torch.device("cpu")
    peak = matmul_peak_gflops(PRECISIONS[precision], cpu, runs=runs)
    n = matmul_size(cpu)
    print(f"{precision} peak (matmul {n}x{n}):           {peak:8.1f} GFLOP/s")
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    px = x.shape[2] * x.shape[3]
    up = Upscaler(desc, device="cpu", precision=precision, tile=0, backend="torch")
    flops = count_flops(lambda: up(x))
    results = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        up.memory_format = fmt
        up.model = up.model.to(memory_format=fmt)
        t = median_seconds(lambda: up(x), runs)
        results[fmt] = t
        name = "NCHW" if fmt == torch.contiguous_format else "channels_last"
        gflops = flops / t / 1e9
        print(f"{precision} realesrgan-x4plus {x.shape[3]}x{x.shape[2]} {name:13s}: {gflops:8.1f} GFLOP/s "
              f"({gflops / peak:5.1%} of peak), {px / t:8.0f} input px/s, {t:.2f} s/frame")
    ratio = results[torch.contiguous_format] / results[torch.channels_last]
    print(f"{precision} channels_last speed / NCHW speed: {ratio:.2f}")


if __name__ == "__main__":
    main()
