"""Video pipeline benchmark: peak memory against video length, and how well decode/encode hide behind
the model. Prints numbers only (no pass/fail on time).

    python benchmarks/bench_video.py                 # 10 s and 60 s clips, 320x240 -> 640x480
    python benchmarks/bench_video.py --size 640x480 --model-ms 20

Each measurement runs in a fresh subprocess so its peak RSS is its own. The stand-in model is a
nearest-neighbour x2 upscale plus an optional sleep per frame (`--model-ms`): sleeping releases the GIL
like a GPU kernel does, so end-to-end frames/s close to the model-only rate means decoding and encoding
run fully in parallel with the model.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _one(src: str, dst: str, model_ms: float, preset: str, batch: int, model: str | None) -> None:
    """Child process: transcode once, print a JSON line with the result and this process's peak RSS."""
    import numpy as np

    from vsr.video import VideoOptions, transcode

    if model:  # the real thing: `vsr upscale` with a named model
        from vsr.upscale import UpscaleOptions, upscale

        r = upscale(Path(src), Path(dst), UpscaleOptions(model=model, quiet=True, batch=batch,
                                                         video=VideoOptions(preset=preset)))
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(dict(frames=r.frames, wall=r.wall_seconds, model=r.model_seconds, peak_mib=peak_mib)))
        return

    def process(x: np.ndarray, *_) -> np.ndarray:  # (N, H, W, 3) -> (N, 2H, 2W, 3)
        if model_ms:
            time.sleep(model_ms / 1000 * len(x))
        return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)

    res = transcode(Path(src), Path(dst), process, 2, VideoOptions(quiet=True, preset=preset, batch_size=batch))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(json.dumps(dict(frames=res.frames, wall=res.wall_seconds, model=res.model_seconds, peak_mib=peak_mib)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60])
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--model-ms", type=float, default=10.0, help="stand-in model time per frame")
    ap.add_argument("--preset", default="veryfast", help="libx264 preset (archival default is slow)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--model", help="a named model instead of the stand-in (e.g. realesr-animevideov3-x2)")
    ap.add_argument("--one", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        _one(*args.one, args.model_ms, args.preset, args.batch, args.model)
        return
    import media

    w, h = (int(v) for v in args.size.split("x"))
    model = args.model or f"x2 nearest-neighbour + {args.model_ms:g} ms/frame stand-in model"
    print(f"input {w}x{h} 25 fps + AAC, {model}, libx264 {args.preset}, batch {args.batch}")
    print(f"{'clip':>6} {'frames':>7} {'peak RSS MiB':>13} {'e2e fps':>8} {'model-only fps':>15} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            src = media.make_clip(Path(tmp) / f"clip{seconds:g}.mp4", seconds=seconds, width=w, height=h)
            cmd = [sys.executable, __file__, "--one", str(src), str(Path(tmp) / f"out{seconds:g}.mp4"),
                   "--model-ms", str(args.model_ms), "--preset", args.preset, "--batch", str(args.batch)]
            cmd += ["--model", args.model] if args.model else []
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            e2e = r["frames"] / r["wall"]
            model = r["frames"] / r["model"] if r["model"] > 0 else float("inf")
            print(f"{seconds:>5g}s {r['frames']:>7} {r['peak_mib']:>13.1f} {e2e:>8.1f} {model:>15.1f} "
                  f"{e2e / model:>6.2f}")


if __name__ == "__main__":
    main()
