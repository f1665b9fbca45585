"""Reading and writing still images: PNG, JPEG, WebP, TIFF (and BMP); 8 or 16 bit; grey, RGB, RGBA."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import VsrError

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # errors are ours to report

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"II*\x00", b"MM\x00*", b"BM")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")


def read_image(path: Path) -> np.ndarray:
    """(H, W, C) RGB(A) or (H, W) grey, uint8 or uint16."""
    data = np.fromfile(path, np.uint8)
    if data.size == 0:
        raise VsrError(f"{path} is empty (0 bytes)")
    if not any(data[:len(m)].tobytes() == m for m in _MAGIC):
        raise VsrError(f"{path} is not an image (its content is not PNG, JPEG, WebP, TIFF or BMP)")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise VsrError(f"cannot decode {path}: the file is truncated or corrupt")
    if img.dtype not in (np.uint8, np.uint16):
        raise VsrError(f"{path}: {img.dtype} samples are not supported; convert it to 8 or 16 bit")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


def write_image(path: Path, img: np.ndarray) -> None:
    """Atomically: written beside ``path`` under a temporary name, then renamed."""
    if path.suffix.lower() in _EIGHT_BIT_ONLY and img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    params = []
    if path.suffix.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    elif path.suffix.lower() == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 95]
    ok, buf = cv2.imencode(path.suffix, img, params)
    if not ok:
        raise VsrError(f"cannot encode {path.suffix} output; use .png")
    tmp = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        buf.tofile(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """High-quality resampling: area averaging to shrink, Lanczos to enlarge."""
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LANCZOS4
    return cv2.resize(img, (width, height), interpolation=interp)
