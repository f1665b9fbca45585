"""Image quality metrics: PSNR and SSIM on the luma (Y, BT.601 studio range as in the SR literature)
or on RGB, and two temporal-consistency measures for frame sequences:

- tOF (TecoGAN, needs ground truth): how far the motion of the output is from the motion of the truth.
- warping error (no ground truth needed): how much each output frame differs from the previous output
  frame moved along the scene's motion, on the pixels visible in both frames; flicker raises it.

Images are (H, W, 3) uint8 RGB arrays (or (H, W) for a single channel). ``border`` pixels are
cropped on every side first (the SR convention is the scale factor). Temporal measures come per pair of
consecutive frames (``*_per_frame``: value ``t - 1`` is for frames ``t - 1 -> t``) and as their mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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


def luma8(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB (or (H, W) grey) -> (H, W) uint8 full-range BT.601 luma, OpenCV's RGB2GRAY:
    what TecoGAN feeds its flow, and what OpenCV's flow methods take."""
    if frame.ndim == 2:
        return frame
    return cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)


# --- tOF -------------------------------------------------------------------------------------------------

def tof_flow(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """(H, W, 2) Farneback flow prev -> cur on luma, with TecoGAN's parameters (pyramid 0.5, 3 levels,
    window 15, 3 iterations, poly_n 5, sigma 1.2): the flow tOF is defined with."""
    return cv2.calcOpticalFlowFarneback(luma8(prev), luma8(cur), None, 0.5, 3, 15, 3, 5, 1.2, 0)


def _tecogan_crop(flow: np.ndarray) -> np.ndarray:
    """TecoGAN's ``crop_8x8``: the centre, a multiple of 32 pixels, leaving at least 8 pixels on every side,
    where the flow is least reliable."""
    h, w = flow.shape[:2]
    ch, cw = h // 32 * 32, w // 32 * 32
    while ch > h - 16:
        ch -= 32
    while cw > w - 16:
        cw -= 32
    if ch <= 0 or cw <= 0:
        raise ValueError(f"tOF needs frames of at least 48x48 pixels, got {w}x{h}")
    y, x = (h - ch) // 2, (w - cw) // 2
    return flow[y:y + ch, x:x + cw]


def flow_distance(output_flow: np.ndarray, truth_flow: np.ndarray) -> float:
    """One tOF value: the mean per-pixel Euclidean distance between two flows, on TecoGAN's crop."""
    d = _tecogan_crop(output_flow) - _tecogan_crop(truth_flow)
    return float(np.sqrt((d * d).sum(axis=2)).mean())


def tof_per_frame(outputs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> list[float]:
    """TecoGAN's tOF for each pair of consecutive frames (N - 1 values, in pixels; lower is better).

    The Farneback flow of output frames t-1 -> t is compared with that of the ground-truth frames t-1 -> t:
    an output whose detail flickers or swims moves differently from the truth, even where each frame alone
    looks right. As in TecoGAN's released metrics code: luma (OpenCV RGB2GRAY), their Farneback
    parameters, their centre crop, the per-pixel Euclidean distance averaged over the crop. (The paper's
    tables show it times 10.)"""
    if len(outputs) != len(truths) or len(outputs) < 2:
        raise ValueError("tOF needs two equally long sequences of at least 2 frames")
    return [flow_distance(tof_flow(po, o), tof_flow(pt, t))
            for po, o, pt, t in zip(outputs[:-1], outputs[1:], truths[:-1], truths[1:])]


def tof(outputs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    """The mean of :func:`tof_per_frame` (lower is better)."""
    return float(np.mean(tof_per_frame(outputs, truths)))


# --- warping error ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Motion:
    """How frame t came from frame t-1: where each pixel of t was in t-1, and which pixels to trust."""

    flow: np.ndarray  # (H, W, 2) float32: frame t at x shows what frame t-1 shows at x + flow[x] (x, y order)
    mask: np.ndarray  # (H, W) bool: visible in both frames (inside t-1, forward and backward flows agree)


def _dis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)


def _sample(img: np.ndarray, where: np.ndarray) -> np.ndarray:
    """img at the (x, y) positions ``where`` (H, W, 2), bilinear; outside positions take the border."""
    return cv2.remap(img, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def estimate_motion(prev: np.ndarray, cur: np.ndarray, size: tuple[int, int] | None = None) -> Motion:
    """Motion from frame t-1 (``prev``) to t (``cur``) with an occlusion mask, at ``size`` (width, height).

    DIS optical flow (OpenCV, medium preset) on luma, both ways: it is faster than Farneback and follows
    larger motions, and it is not the flow tOF uses, so the two measures do not share one method's blind
    spots. Frames smaller than ``size`` (the low-resolution input of an upscale) give their flow resized
    bilinearly and scaled to it. Occlusions by forward-backward consistency (Sundaram et al. 2010, as in
    Ruder et al. and Lai et al.): a pixel is trusted when the forward flow at the place it came from undoes
    its backward flow, |b + f'|^2 <= 0.01 (|b|^2 + |f'|^2) + 0.5 pixels^2, and that place is inside the frame.
    """
    p, c = luma8(prev), luma8(cur)
    back, fwd = _dis(c, p), _dis(p, c)  # cur(x) ~ prev(x + back(x)); prev(x) ~ cur(x + fwd(x))
    h, w = c.shape
    width, height = size or (w, h)
    if (width, height) != (w, h):
        gain = np.array([width / w, height / h], np.float32)
        back = cv2.resize(back, (width, height), interpolation=cv2.INTER_LINEAR) * gain
        fwd = cv2.resize(fwd, (width, height), interpolation=cv2.INTER_LINEAR) * gain
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)), axis=2)
    where = grid + back
    fwd_there = _sample(fwd, where)
    mismatch = ((back + fwd_there) ** 2).sum(axis=2)
    consistent = mismatch <= 0.01 * ((back ** 2).sum(axis=2) + (fwd_there ** 2).sum(axis=2)) + 0.5
    inside = ((where[..., 0] >= 0) & (where[..., 0] <= width - 1) & (where[..., 1] >= 0)
              & (where[..., 1] <= height - 1))
    return Motion(flow=back, mask=consistent & inside)


def warp_previous(prev: np.ndarray, motion: Motion) -> np.ndarray:
    """Frame t-1 moved along ``motion`` onto frame t: (H, W, C) float32 in 0..1."""
    h, w = motion.mask.shape
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=2)
    warped = _sample(prev.astype(np.float32) / 255.0, grid + motion.flow)
    return warped.reshape(prev.shape)


def warping_error_pair(prev: np.ndarray, cur: np.ndarray, motion: Motion) -> float:
    """Mean squared difference (RGB in 0..1, averaged over the samples) between frame t and frame t-1
    warped onto it, over the pixels the mask trusts; NaN when it trusts none (a cut, a flash)."""
    if prev.shape != cur.shape or cur.shape[:2] != motion.mask.shape:
        raise ValueError(f"frames and motion differ in size: {prev.shape}, {cur.shape}, {motion.mask.shape}")
    if not motion.mask.any():
        return float("nan")
    d = cur.astype(np.float32) / 255.0 - warp_previous(prev, motion)
    d = d * d if d.ndim == 2 else (d * d).mean(axis=2)  # (H, W)
    return float(d[motion.mask].mean())


def warping_error_per_frame(frames: Sequence[np.ndarray], guide: Sequence[np.ndarray] | None = None) -> list[float]:
    """The warping error of each frame against the previous one (N - 1 values; lower is better; no ground
    truth needed), as Lai et al. 2018 ("Learning blind video temporal consistency") define E_warp.

    The motion comes from ``guide`` when given: the low-resolution input the frames were upscaled from (or
    the ground truth). That is the better choice: the same motion judges every candidate output, and an
    output's own flicker cannot bend the flow to explain itself away. Without a guide the frames' own motion
    is used, which is all there is for an output alone; it reads flicker a little lower.
    """
    guide = frames if guide is None else guide
    if len(frames) != len(guide) or len(frames) < 2:
        raise ValueError("the warping error needs at least 2 frames (and as many guide frames)")
    h, w = frames[0].shape[:2]
    return [warping_error_pair(p, c, estimate_motion(gp, gc, (w, h)))
            for p, c, gp, gc in zip(frames[:-1], frames[1:], guide[:-1], guide[1:])]


def warping_error(frames: Sequence[np.ndarray], guide: Sequence[np.ndarray] | None = None) -> float:
    """The mean of :func:`warping_error_per_frame` over the pairs with trusted pixels (lower is better)."""
    values = [v for v in warping_error_per_frame(frames, guide) if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")
