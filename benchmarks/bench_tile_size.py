"""Seconds per frame of one model at several tile sizes (0: the whole frame), on a crop of a real photo,
in one process with interleaved rounds: whether a tile smaller than what fits in memory is ever faster.

    python benchmarks/bench_tile_size.py [--model esrgan] [--size 288] [--tiles 0 192 128 96] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from vsr import images, zoo
from vsr.engine import Upscaler

DATA = Path(os.environ.get("VSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="esrgan")
    ap.add_argument("--size", type=int, default=288, help="side of the square crop of plasma-Path.jpg")
    ap.add_argument("--tiles", type=int, nargs="+", default=[0, 192, 128, 96])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    img = images.read_image(DATA / "photos" / "plasma-Path.jpg")[:args.size, :args.size, :3][None]
    desc, _ = zoo.resolve(args.model, None)
    engines = {t: Upscaler(desc, precision=args.precision, backend=args.backend, tile=t) for t in args.tiles}
    for e in engines.values():
        e.upscale_array(img)  # warm-up (OpenVINO compiles per input shape)
    times: dict[int, list[float]] = {t: [] for t in args.tiles}
    for _ in range(args.rounds):
        for t, e in engines.items():
            t0 = time.perf_counter()
            e.upscale_array(img)
            times[t].append(time.perf_counter() - t0)
    whole = statistics.median(times[args.tiles[0]])
    print(f"{args.model}, {args.size}x{args.size} crop, overlap {desc.tile_overlap} px, median of {args.rounds}")
    for t, e in engines.items():
        med = statistics.median(times[t])
        print(f"tile {t or 'whole':>5}: {med:6.2f} s/frame  {e.tiles(args.size, args.size)} tiles  "
              f"{med / whole:.2f}x the first  ({e.backend}, {e.dtype})")


if __name__ == "__main__":
    main()
