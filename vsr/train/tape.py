"""Tape defects with known parameters, put on clean frames: the ground truth of tape repair (its tests and
benchmarks/bench_repair.py) and material for training.

A tape's defects happen before anything is RGB, so they are put on Y, U, V planes: (H, W, 3) float32 code
values on a 0..255 scale (BT.601, limited range), as :func:`vsr.video.repair.yuv_planes` reads a decoded
frame. Distances are in pixels of the frame (VHS numbers are for a 720-wide capture: scale with the width).
"""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from vsr.video.mend import yuv_planes


def yuv(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> Y, U, V planes (BT.601 limited range, chroma at full size)."""
    return yuv_planes(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))


def _frame(planes: np.ndarray) -> av.VideoFrame:
    a = np.clip(planes + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="yuv444p")


def rgb(planes: np.ndarray) -> np.ndarray:
    """Y, U, V planes -> (H, W, 3) uint8 RGB, as a decoder converts them."""
    return _frame(planes).reformat(format="rgb24").to_ndarray()


def write(path: Path, clip: list[np.ndarray], rate: int = 25) -> Path:
    """Y, U, V planes as a lossless FFV1 (4:4:4) video: a capture whose picture is exactly these planes."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=rate)
        s.width, s.height, s.pix_fmt = clip[0].shape[1], clip[0].shape[0], "yuv444p"
        for planes in clip:
            c.mux(s.encode(_frame(planes)))
        c.mux(s.encode(None))
    return path


def chroma_delay(planes: np.ndarray, dx: float, dy: float = 0.0) -> np.ndarray:
    """Chroma moved right by dx and down by dy against luma, as a deck's chroma path delays it."""
    out = planes.copy()
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    for c in (1, 2):
        out[..., c] = cv2.warpAffine(planes[..., c], m, (planes.shape[1], planes.shape[0]), flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REFLECT)
    return out


def dropouts(planes: np.ndarray, count: int, rng: np.random.Generator, *, length: tuple[int, int] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` dropout streaks where the FM carrier was lost: 1-2 lines tall, ``length`` px long (default
    about 10-150 px at 720 wide), white, black or noise, without colour. Returns (planes, mask of the streaks)."""
    h, w = planes.shape[:2]
    lo, hi = length or (max(8, w // 70), max(16, w // 5))
    out = planes.copy()
    mask = np.zeros((h, w), bool)
    for _ in range(count):
        tall = int(rng.integers(1, 3))
        r = int(rng.integers(8, h - 16 - tall))  # clear of the head-switching band and the top lines
        n = int(rng.integers(lo, hi + 1))
        x0 = int(rng.integers(0, max(1, w - n)))
        kind = rng.integers(3)
        if kind == 0:  # white: the deck's limiter clips the lost carrier
            v = 215 + rng.random((tall, n)) * 20
        elif kind == 1:  # black
            v = 16 + rng.random((tall, n)) * 16
        else:  # noise around white
            v = np.clip(190 + rng.normal(0, 30, (tall, n)), 16, 235)
        out[r:r + tall, x0:x0 + n, 0] = v
        out[r:r + tall, x0:x0 + n, 1:] = 128.0
        mask[r:r + tall, x0:x0 + n] = True
    return out, mask


def chroma_noise(planes: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Chroma noise of std ``sigma`` (code levels) as a VHS colour-under signal has it: new on every line,
    smeared along the line (its bandwidth is a fraction of luma's); luma untouched."""
    out = planes.copy()
    for c in (1, 2):
        n = cv2.GaussianBlur(rng.normal(0.0, 1.0, planes.shape[:2]).astype(np.float32), (0, 0), sigmaX=2.0,
                             sigmaY=0.01)
        out[..., c] += n * (sigma / max(1e-6, float(n.std())))
    return out


def head_switching(planes: np.ndarray, rows: int, skew: float, rng: np.random.Generator, *,
                   blank: tuple[float, float, float] = (16.0, 128.0, 128.0)) -> np.ndarray:
    """The bottom ``rows`` lines torn sideways (line i of the band moved right by skew * ((i + 1) / rows)^1.5,
    ``blank`` coming in at the left) and noisier towards the bottom."""
    out = planes.copy()
    h = planes.shape[0]
    for i in range(rows):
        r = h - rows + i
        s = int(round(skew * ((i + 1) / rows) ** 1.5))
        line = np.roll(planes[r], s, axis=0)
        line[:s] = blank
        line[:, 0] += rng.normal(0, 3 + 10 * (i + 1) / rows, line.shape[0])
        out[r] = line
    return out


def line_jitter(planes: np.ndarray, amount: float, rng: np.random.Generator, *, smooth: float = 6.0,
                noise: float = 0.3, jumps: float = 0.02, blank: tuple[float, float, float] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Time-base error: each line moved right by its own offset (px, sub-pixel; Y, U and V alike; where the
    picture comes in, its edge pixel repeated, or ``blank`` such as (16, 128, 128), the blanking level).
    Returns (planes, offsets): offsets (H,) float32, the truth.

    Each field (even lines, odd lines) gets its own offsets, as a deck without a time-base corrector reads
    them apart: a random walk that drifts back to zero over about ``smooth`` lines of the field and jumps
    to a new value with probability ``jumps`` per line, plus independent noise that carries the fraction
    ``noise`` of the variance; scaled so that the offsets' RMS over the frame is ``amount``."""
    h, w = planes.shape[:2]
    offsets = np.zeros(h, np.float64)
    a = float(np.exp(-1.0 / smooth))
    for parity in (0, 1):
        n = len(range(parity, h, 2))
        walk = np.empty(n)
        walk[0] = rng.normal()
        steps, jump, fresh = rng.normal(size=n), rng.random(n) < jumps, rng.normal(size=n)
        for i in range(1, n):
            walk[i] = fresh[i] if jump[i] else a * walk[i - 1] + np.sqrt(1 - a * a) * steps[i]
        offsets[parity::2] = np.sqrt(1 - noise) * walk + np.sqrt(noise) * rng.normal(size=n)
    offsets *= amount / max(1e-9, float(np.sqrt(np.mean(offsets ** 2))))
    offsets = offsets.astype(np.float32)
    gx = np.arange(w, dtype=np.float32)[None, :] - offsets[:, None]  # out(x) = in(x - offset)
    gy = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    if blank is None:
        out = cv2.remap(planes, gx, gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    else:
        out = cv2.remap(planes, gx, gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=blank)
    return out, offsets
