"""Tiles and time for one frame of an x2 or x1 RRDB (pixel-unshuffle) model, at the tile overlap its
descriptor gives and at twice that (what the engine computed when it multiplied the overlap by the
size multiple a second time).

    python benchmarks/bench_tiles.py [--scale 2] [--tile 256] [--runs 3] [--size 768x576]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from vsr import arch
from vsr.engine import Upscaler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=2, choices=[1, 2])
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--size", default="768x576", help="frame size (vtest.avi's by default)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(torch.get_num_threads())
    desc = arch.build("rrdb", scale=args.scale)  # realesrgan-x4plus's trunk (23 blocks), random weights
    x = torch.rand(1, 3, h, w)
    print(f"RRDB x{args.scale}, {w}x{h} frame, tile {args.tile}, descriptor overlap {desc.tile_overlap} input px")
    rows = []
    for label, overlap in (("overlap x multiple again (before)", desc.tile_overlap * desc.size_multiple),
                           ("descriptor overlap (now)", desc.tile_overlap)):
        up = Upscaler(desc, device="cpu", precision=args.precision, tile=args.tile, overlap=overlap)
        up(x[:, :, :64, :64])  # warm-up
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            up(x)
            times.append(time.perf_counter() - t0)
        rows.append((label, overlap, up.tiles(h, w), statistics.median(times)))
    for label, overlap, tiles, t in rows:
        print(f"{label:36s} overlap {overlap:4d}  tiles {tiles:3d}  {t:7.2f} s per frame (median of {args.runs})")
    print(f"ratio: {rows[0][3] / rows[1][3]:.2f}x the time before")


if __name__ == "__main__":
    main()
