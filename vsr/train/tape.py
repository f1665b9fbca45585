"""Tape defects with known parameters, put on clean frames: the ground truth of tape repair (its tests and
benchmarks/bench_repair.py) and material for training. Frames are (H, W, 3) uint8 RGB; distances are in
pixels of the frame (VHS numbers are for a 720-wide capture: scale them with the width)."""
from __future__ import annotations

import cv2
import numpy as np


def _ycc(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2YCrCb)


def _rgb(ycc: np.ndarray) -> np.ndarray:
    return np.clip(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB) + 0.5, 0, 255).astype(np.uint8)


def chroma_delay(rgb: np.ndarray, dx: float, dy: float = 0.0) -> np.ndarray:
    """Chroma moved right by dx and down by dy against luma, as a deck's chroma path delays it."""
    f = _ycc(rgb)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    for c in (1, 2):
        f[..., c] = cv2.warpAffine(f[..., c], m, (rgb.shape[1], rgb.shape[0]), flags=cv2.INTER_CUBIC,
                                   borderMode=cv2.BORDER_REFLECT)
    return _rgb(f)


def dropouts(rgb: np.ndarray, count: int, rng: np.random.Generator, *, length: tuple[int, int] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` dropout streaks where the FM carrier was lost: 1-2 lines tall, ``length`` px long (default
    about 10-150 px at 720 wide), white, black or noise, without colour. Returns (frame, mask of the streaks)."""
    h, w = rgb.shape[:2]
    lo, hi = length or (max(6, w // 70), max(12, w // 5))
    out = rgb.copy()
    mask = np.zeros((h, w), bool)
    for _ in range(count):
        tall = int(rng.integers(1, 3))
        r = int(rng.integers(8, h - 16 - tall))  # clear of the head-switching band and the top lines
        n = int(rng.integers(lo, hi + 1))
        x0 = int(rng.integers(0, max(1, w - n)))
        kind = rng.integers(3)
        if kind == 0:  # white: the deck's limiter clips the lost carrier
            v = 225 + rng.random((tall, n)) * 30
        elif kind == 1:  # black
            v = rng.random((tall, n)) * 30
        else:  # noise around white
            v = np.clip(200 + rng.normal(0, 40, (tall, n)), 0, 255)
        out[r:r + tall, x0:x0 + n] = v[..., None].astype(np.uint8)
        mask[r:r + tall, x0:x0 + n] = True
    return out, mask


def head_switching(rgb: np.ndarray, rows: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """The bottom ``rows`` lines torn sideways (line i of the band moved right by skew * ((i + 1) / rows)^1.5,
    blanking level coming in at the left) and noisier towards the bottom."""
    out = rgb.copy()
    h, w = rgb.shape[:2]
    for i in range(rows):
        r = h - rows + i
        s = int(round(skew * ((i + 1) / rows) ** 1.5))
        line = np.roll(rgb[r], s, axis=0).astype(np.float32)
        line[:s] = 16.0
        line += rng.normal(0, 4 + 12 * (i + 1) / rows, line.shape[:1])[:, None]
        out[r] = np.clip(line + 0.5, 0, 255).astype(np.uint8)
    return out
