"""`vsr demo`: restore a generated, degraded picture with the default model and report how it did."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from . import images
from .upscale import UpscaleOptions, upscale


def make_scene(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A synthetic RGB scene with gradients, edges, fine lines and text."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([90 + 80 * xx / width, 60 + 120 * yy / height, 160 - 60 * xx / width], axis=2)
    img = img.astype(np.uint8).copy()
    for _ in range(12):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(img, centre, int(rng.integers(10, 70)), colour, -1, cv2.LINE_AA)
    for x in range(20, 200, 6):
        cv2.line(img, (x, 300), (x + 40, 460), (250, 250, 250), 1, cv2.LINE_AA)
    cv2.putText(img, "vsr restores", (220, 400), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (20, 20, 20), 4, cv2.LINE_AA)
    cv2.putText(img, "old footage", (240, 450), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 240), 2, cv2.LINE_AA)
    return img


def degrade(img: np.ndarray, factor: int = 4, seed: int = 0) -> np.ndarray:
    """Blur, downscale, noise and JPEG: roughly what a low-resolution digital source looks like."""
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    small = cv2.resize(cv2.GaussianBlur(img, (0, 0), 1.2), (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    noisy = np.clip(small + rng.normal(0, 3, small.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 60])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def run_demo(outdir: Path, model: str = "esrgan", device: str = "auto") -> int:
    outdir.mkdir(parents=True, exist_ok=True)
    truth = make_scene()
    src = outdir / "input.png"
    images.write_image(src, degrade(truth))
    dst = outdir / "restored.png"
    report = upscale(src, dst, UpscaleOptions(model=model, device=device, overwrite=True, quiet=True))
    restored = images.read_image(dst)
    bicubic = images.resize(images.read_image(src), truth.shape[1], truth.shape[0])
    cv2.imwrite(str(outdir / "bicubic.png"), cv2.cvtColor(bicubic, cv2.COLOR_RGB2BGR))
    print(f"input    {src} (160x120, blurred, noisy, JPEG)")
    print(f"restored {dst} with {model} in {report.model_seconds:.1f} s: "
          f"PSNR {psnr(restored, truth):.2f} dB against the clean original "
          f"(bicubic {psnr(bicubic, truth):.2f} dB, {outdir / 'bicubic.png'})", file=sys.stdout)
    return 0
