"""Analog ingest, measured: combing before and after deinterlacing a woven interlaced clip (frame rate
and frame count too), and the display aspect of 720x480/576 inputs with DVD/VHS pixel aspects.

    python benchmarks/bench_ingest.py
"""

from __future__ import annotations

import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import analog_media as am  # noqa: E402

from vsr.video import IngestOptions, VideoOptions, transcode  # noqa: E402
from vsr.video.ingest import combing  # noqa: E402


def measure(path: Path) -> tuple[float, int, float]:
    """(mean combed-pixel share, frames, frames per second from the timestamps)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        scores, times = [], []
        for f in c.decode(s):
            scores.append(combing(f.to_ndarray(format="gray")))
            times.append(float(f.pts * s.time_base))
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return float(np.mean(scores)), len(times), rate


def identity(x: np.ndarray, *_) -> np.ndarray:
    return x


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        woven = am.make_interlaced(tmp / "woven.mkv", width=720, height=576, frames=50)
        twin = am.make_progressive_twin(tmp / "twin.mkv", width=720, height=576, frames=100)
        print("combing = share of pixels brighter or darker than both vertical neighbours by > 12 levels")
        print(f"{'clip':44s} {'combing':>8s} {'frames':>6s} {'fps':>6s}")
        rows = [("progressive original at field rate (baseline)", twin),
                ("woven interlaced input, 720x576 25i TFF", woven)]
        for name, dr in (("bwdif, frame rate (--deinterlace auto)", False),
                         ("bwdif, field rate (--double-rate)", True)):
            opts = VideoOptions(quiet=True, codec="ffv1", ingest=IngestOptions(deinterlace="auto", double_rate=dr))
            rows.append((name, transcode(woven, tmp / f"out{dr}.mkv", identity, 1, opts).output))
        for name, path in rows:
            comb, n, fps = measure(path)
            print(f"{name:44s} {comb:8.4f} {n:6d} {fps:6.2f}")

        print("\ndisplay aspect (width x SAR / height) of square-pixel outputs and of --keep-sar outputs")
        print(f"{'input':10s} {'SAR':>6s} {'expected':>9s} {'output':>10s} {'DAR out':>8s} {'keep-sar DAR':>13s}")
        for height in (480, 576):
            for sar in ("8/9", "10/11", "32/27", "16/15"):
                src = am.make_sd(tmp / "sd.mkv", height=height, sar=sar)
                want = Fraction(720) * Fraction(sar) / height
                out = transcode(src, tmp / "sq.mkv", identity, 1, VideoOptions(quiet=True, codec="ffv1")).output
                kept = transcode(src, tmp / "kept.mkv", identity, 1,
                                 VideoOptions(quiet=True, codec="ffv1", keep_sar=True)).output
                with av.open(str(out)) as c:
                    w, h = c.streams.video[0].width, c.streams.video[0].height
                print(f"720x{height:<6d} {sar:>6s} {float(want):9.4f} {f'{w}x{h}':>10s} "
                      f"{float(am.display_aspect(out)):8.4f} {float(am.display_aspect(kept)):13.4f}")


if __name__ == "__main__":
    main()
