"""End-to-end video frames/s against model-only frames/s, measured in the same run on a real clip.

    python benchmarks/bench_video_e2e.py [--model compact] [--frames 12 60] [--runs 3] [--preset slow]
                                         [--input vtest.avi]

Model-only: the first N frames decoded into memory, then timed through the engine alone (after it has
measured its backend and precision, as `vsr upscale` does).
End-to-end: `vsr upscale` on the first N frames (decode thread, engine, encode thread, mux), wall time
from the call to the finished file, at two lengths. A file costs a fixed time (building the network, probing,
the encoder's last frames, the final mux) and then a time per frame: the difference between the two lengths
gives the steady pipeline's seconds per frame, which a long video runs at. A ratio near 1 means decoding and
encoding hide behind the network. Prints medians of several runs; never passes or fails on time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from vsr import zoo
from vsr.engine import Upscaler
from vsr.upscale import UpscaleOptions, upscale
from vsr.video import VideoOptions

DATA = Path(os.environ.get("VSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", type=Path, default=DATA / "video" / "vtest.avi")
    ap.add_argument("--model", default="compact")
    ap.add_argument("--frames", type=int, nargs=2, default=[12, 60], metavar=("SHORT", "LONG"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--preset", default=None, help="libx264 preset (default: vsr's, veryfast with the network on the "
                    "CPU, else slow)")
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()
    short, long = sorted(args.frames)

    with av.open(str(args.input)) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(long), c.decode(video=0))]
    desc, _ = zoo.resolve(args.model)
    engine = Upscaler(desc)
    batch = args.batch or (1 if engine.device.type == "cpu" else 4)
    engine.tune((batch, 3, *frames[0].shape[:2]), picture=frames[0])  # as vsr upscale does
    print(f"{args.input.name}: {frames[0].shape[1]}x{frames[0].shape[0]}, {args.model} on {engine.device} "
          f"({engine.backend} {engine.dtype}), batch {batch}, libx264 preset "
          f"{args.preset or ('veryfast' if engine.device.type == 'cpu' else 'slow')}; {short} and {long} frames")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def e2e(n: int) -> float:
            opts = UpscaleOptions(model=args.model, quiet=True, overwrite=True, batch=batch,
                                  video=VideoOptions(max_frames=n, preset=args.preset))
            t = time.perf_counter()
            report = upscale(args.input, Path(tmp) / "out.mkv", opts)
            assert report.frames == n, report.frames
            return time.perf_counter() - t

        for run in range(args.runs):
            t = time.perf_counter()
            for i in range(0, len(frames), batch):
                engine.upscale_array(np.stack(frames[i:i + batch]))
            model = (time.perf_counter() - t) / len(frames)
            t_short, t_long = e2e(short), e2e(long)
            steady = (t_long - t_short) / (long - short)
            fixed = t_short - short * steady
            rows.append((model, steady, fixed, t_long / long))
            print(f"run {run + 1}: model-only {model:.3f} s/frame; end to end {t_long / long:.3f} s/frame over "
                  f"{long} frames, steady {steady:.3f} s/frame (ratio {model / steady:.3f}) + {fixed:.1f} s a file")
    model, steady, fixed, whole = (statistics.median(r[i] for r in rows) for i in range(4))
    print(f"median: model-only {1 / model:.3f} fps; end to end {1 / whole:.3f} fps over {long} frames "
          f"(ratio {model / whole:.3f}); steady pipeline {1 / steady:.3f} fps (ratio {model / steady:.3f}), "
          f"{fixed:.1f} s a file")


if __name__ == "__main__":
    main()
