"""Image quality metrics: PSNR and SSIM on the luma (Y, BT.601 studio range as in the SR literature)
or on RGB, and a temporal-consistency measure (tOF) for frame sequences.

Images are (H, W, 3) uint8 RGB arrays (or (H, W) for a single channel). ``border`` pixels are
cropped on every side first (the SR convention is the scale factor).
"""
from __future__ import annotations

import cv2
import numpy as np


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float64 luma in 16..235 (BT.601, like MATLAB's rgb2ycbcr)."""
    x = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def _prepare(a: np.ndarray, b: np.ndarray, *, y: bool, border: int) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    if y and a.ndim == 3:
        return rgb_to_y(a), rgb_to_y(b)
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, *, y: bool = True, border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); ``y=False`` measures over all RGB samples."""
    a, b = _prepare(a, b, y=y, border=border)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    win = cv2.getGaussianKernel(11, 1.5)
    k = win @ win.T

    def f(x: np.ndarray) -> np.ndarray:  # 'valid' Gaussian filtering, as in the reference code
        return cv2.filter2D(x, -1, k)[5:-5, 5:-5]

    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def ssim(a: np.ndarray, b: np.ndarray, *, y: bool = True, border: int = 0) -> float:
    """Structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5); RGB = channel mean."""
    a, b = _prepare(a, b, y=y, border=border)
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}")
    if a.ndim == 2:
        return _ssim_channel(a, b)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def tof(outputs: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """Temporal consistency (TecoGAN's tOF): mean distance between the Farneback optical flow of
    consecutive output frames and that of consecutive ground-truth frames (lower is better)."""
    if len(outputs) != len(truths) or len(outputs) < 2:
        raise ValueError("tOF needs two equally long sequences of at least 2 frames")

    def flows(frames: list[np.ndarray]) -> list[np.ndarray]:
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if f.ndim == 3 else f for f in frames]
        return [cv2.calcOpticalFlowFarneback(p, c, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                for p, c in zip(grey[:-1], grey[1:])]

    d = [np.linalg.norm(fo - ft, axis=2).mean() for fo, ft in zip(flows(outputs), flows(truths))]
    return float(np.mean(d))
