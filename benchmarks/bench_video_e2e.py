"""End-to-end video frames/s against model-only frames/s, measured in the same run on a real clip.

    python benchmarks/bench_video_e2e.py [--model realesr-animevideov3-x2] [--frames 40] [--runs 3]
                                         [--preset slow] [--input vtest.avi]

Model-only: the first N frames decoded into memory, then timed through the engine alone.
End-to-end: `vsr upscale` on the same N frames (decode thread, engine, encode thread, mux), wall time
from start to the finished file. A ratio near 1 means decoding and encoding hide behind the network.
Prints medians of several runs; never passes or fails on time.
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
    ap.add_argument("--model", default="realesr-animevideov3-x2")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--preset", default=None, help="libx264 preset (default: the archival default, slow)")
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()

    with av.open(str(args.input)) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(args.frames), c.decode(video=0))]
    desc, _ = zoo.resolve(args.model)
    engine = Upscaler(desc)
    batch = args.batch or (1 if engine.device.type == "cpu" else 4)
    print(f"{args.input.name}: {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]}, {args.model} "
          f"on {engine.device} ({engine.dtype}), batch {batch}, libx264 preset {args.preset or 'slow'}")
    model_fps, e2e_fps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            t = time.perf_counter()
            for i in range(0, len(frames), batch):
                engine.upscale_array(np.stack(frames[i:i + batch]))
            model_fps.append(len(frames) / (time.perf_counter() - t))
            opts = UpscaleOptions(model=args.model, quiet=True, overwrite=True, batch=batch,
                                  video=VideoOptions(max_frames=args.frames, preset=args.preset))
            report = upscale(args.input, Path(tmp) / "out.mkv", opts)
            e2e_fps.append(report.frames / report.wall_seconds)
            print(f"run {run + 1}: model-only {model_fps[-1]:.2f} fps, end-to-end {e2e_fps[-1]:.2f} fps "
                  f"(ratio {e2e_fps[-1] / model_fps[-1]:.2f})")
    m, e = statistics.median(model_fps), statistics.median(e2e_fps)
    print(f"median: model-only {m:.2f} fps, end-to-end {e:.2f} fps, ratio {e / m:.2f}")


if __name__ == "__main__":
    main()
