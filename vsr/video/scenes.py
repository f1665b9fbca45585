"""Scene cuts: where a frame has nothing to do with the one before it, so that anything carried from
frame to frame (a recurrent network's state) starts afresh.

The measure is the mean absolute difference of hue, saturation and value between two small copies of
the frames (the content measure of PySceneDetect's default detector): camera motion and noise move it
little, a cut to another shot moves it a lot. It looks at two frames only, so a resumed run finds the
same cuts as an uninterrupted one.
"""

from __future__ import annotations

import cv2
import numpy as np

WIDTH = 96  # frames are compared at this width
THRESHOLD = 30.0  # mean |delta| of H (0-179), S and V (0-255) that makes a cut


def signature(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8/uint16 RGB -> a small HSV copy (float32) for :func:`is_cut`."""
    if rgb.dtype == np.uint16:
        rgb = (rgb >> 8).astype(np.uint8)
    h, w = rgb.shape[:2]
    width = min(WIDTH, w)
    small = cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float32)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute HSV difference of two signatures."""
    return float(np.abs(a - b).mean())


def is_cut(a: np.ndarray, b: np.ndarray, threshold: float = THRESHOLD) -> bool:
    return difference(a, b) > threshold
