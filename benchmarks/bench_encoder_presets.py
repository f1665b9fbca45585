"""What each libx264 preset costs beside the network on the CPU: seconds per frame, share of the network's
time, size and fidelity, on a real clip upscaled by a model, at vsr's CRF.

    python benchmarks/bench_encoder_presets.py [--input ../shared/data/video/vtest.avi] [--model compact]
                                               [--frames 24]

The frames are upscaled first (network time per frame measured), then each preset encodes the same frames
(RGB in, as vsr hands them over, so the colour conversion counts). PSNR is of the decoded YUV against the
YUV the encoder was given: what the encoder loses, not what the network does. On two cores the encoder
and the network share the CPU, so the end-to-end time is about network + encoder per frame.
"""
from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import av
import numpy as np

from vsr import zoo
from vsr.engine import Upscaler
from vsr.video.options import CODEC_DEFAULTS

DATA = Path(os.environ.get("VSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PRESETS = ["slow", "medium", "fast", "faster", "veryfast", "superfast", "ultrafast"]


def encode(frames: list[np.ndarray], preset: str, crf: float) -> tuple[float, bytes]:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as oc:
        s = oc.add_stream("libx264", rate=25, options={"crf": str(crf), "preset": preset})
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        t = time.perf_counter()
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                oc.mux(p)
        for p in s.encode():
            oc.mux(p)
        seconds = time.perf_counter() - t
    return seconds / len(frames), buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=DATA / "video" / "vtest.avi")
    ap.add_argument("--model", default="compact")
    ap.add_argument("--frames", type=int, default=24)
    args = ap.parse_args()
    with av.open(str(args.input)) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(args.frames), c.decode(video=0))]
    desc, _ = zoo.resolve(args.model)
    engine = Upscaler(desc)
    engine.tune((1, 3, *frames[0].shape[:2]), picture=frames[0])
    t = time.perf_counter()
    out = [engine.upscale_array(f[None])[0] for f in frames]
    network = (time.perf_counter() - t) / len(frames)
    crf = CODEC_DEFAULTS["libx264"].crf
    print(f"{args.input.name}: {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]} -> "
          f"{out[0].shape[1]}x{out[0].shape[0]}; {args.model} ({engine.backend} {engine.dtype}) {network:.3f} s/frame; "
          f"libx264 CRF {crf}")
    given = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray() for f in out]
    print(f"{'preset':<11}{'s/frame':>8}{'of network':>12}{'end to end':>12}{'kB/frame':>10}{'PSNR':>9}")
    for preset in PRESETS:
        seconds, data = encode(out, preset, crf)
        with av.open(io.BytesIO(data)) as ic:
            decoded = [f.to_ndarray() for f in ic.decode(video=0)]
        mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(decoded, given)])
        print(f"{preset:<11}{seconds:8.3f}{seconds / network:11.0%}{network / (network + seconds):11.0%}"
              f"{len(data) / len(frames) / 1e3:10.0f}{10 * np.log10(255 ** 2 / mse):6.2f} dB")


if __name__ == "__main__":
    main()
