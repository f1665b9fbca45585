"""Peak memory (RSS) and time of `vsr upscale` with an SRFlow model: a x4 upscale of a 256x256 crop of a
real photo to a 1024x1024 output, each setting in a fresh process (the peak is that process's own).

    python benchmarks/bench_srflow_memory.py [--model srflow] [--tile auto --tile 0 --tile 128] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval_esrgan import data_dir  # noqa: E402  (benchmarks/ is on the path)


def child(args: list[str]) -> None:
    """Run the CLI in this process, then print its report and this process's peak RSS."""
    from vsr.cli import main as cli

    rc = cli(args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"rc": rc, "peak_rss": peak}))


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="srflow")
    ap.add_argument("--tile", action="append", help="tile settings to compare (default: auto)")
    ap.add_argument("--tau", default="0")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    photo = data_dir() / "photos" / "plasma-Path.jpg"
    if not photo.is_file():
        print(f"skipped: {photo} not found (set VSR_DATA)")
        return 0
    import numpy as np

    from vsr import images

    with tempfile.TemporaryDirectory() as tmp:
        img = images.read_image(photo)
        h, w = img.shape[:2]
        src = Path(tmp) / "crop.png"
        images.write_image(src, np.ascontiguousarray(img[(h - 256) // 2:(h + 256) // 2, (w - 256) // 2:(w + 256) // 2]))
        print(f"{args.model}: {photo.name} centre 256x256 -> 1024x1024, tau {args.tau}, {args.runs} runs each")
        for tile in args.tile or ["auto"]:
            peaks, times = [], []
            for i in range(args.runs):
                out = Path(tmp) / f"out-{tile}-{i}.png"
                r = subprocess.run([sys.executable, __file__, "--child", "upscale", str(src), "-o", str(out),
                                    "--model", args.model, "--tile", tile, "--tau", args.tau, "--quiet",
                                    "--json"], capture_output=True, text=True, check=False)
                lines = r.stdout.strip().splitlines()
                if r.returncode or not lines:
                    print(f"  tile {tile}: failed: {(r.stderr or r.stdout).strip()[-300:]}")
                    return 1
                peaks.append(json.loads(lines[-1])["peak_rss"] / 2 ** 30)
                times.append(json.loads("\n".join(lines[:-1]))["wall_seconds"])  # the CLI's summary
            print(f"  tile {tile:>5}: peak RSS median {statistics.median(peaks):.2f} GiB "
                  f"[{min(peaks):.2f}..{max(peaks):.2f}], wall {statistics.median(times):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
