"""Reading and writing still images: PNG, JPEG, WebP, TIFF (and BMP); 8 or 16 bit; grey, RGB, RGBA."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from .errors import VsrError

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # errors are ours to report

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"II*\x00", b"MM\x00*", b"BM")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")


def read_image(path: Path) -> np.ndarray:
    """(H, W, C) RGB(A) or (H, W) grey, uint8 or uint16, turned as it is displayed (EXIF orientation)."""
    try:
        data = np.fromfile(path, np.uint8)
    except PermissionError:
        raise VsrError(f"{path}: cannot be read (permission denied); give yourself read permission "
                       "(chmod u+r) or run as a user who can read it") from None
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
    # OpenCV applies a TIFF's own orientation tag even when reading unchanged; the EXIF of JPEG, PNG and
    # WebP it leaves to us (phone photos are stored sideways with orientation 6 or 8).
    return np.ascontiguousarray(orient(img, exif_orientation(data.tobytes())))


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """The stored picture turned as EXIF orientation 1-8 says it is displayed; (H, W, ...) arrays."""
    return {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # displayed turned 90 degrees clockwise
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # transverse
        8: lambda a: np.rot90(a, 1),  # displayed turned 90 degrees counter-clockwise
    }.get(orientation, lambda a: a)(img)


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG (APP1), PNG (eXIf) or WebP (EXIF chunk); 1 when there is none
    or it cannot be read."""
    exif = b""
    if data[:3] == b"\xff\xd8\xff":
        at = 2
        while at + 4 <= len(data) and data[at] == 0xFF and data[at + 1] not in (0xDA, 0xD9):  # up to the scan
            size = struct.unpack(">H", data[at + 2:at + 4])[0]
            if data[at + 1] == 0xE1 and data[at + 4:at + 10] == b"Exif\0\0":
                exif = data[at + 10:at + 2 + size]
                break
            at += 2 + size
    elif data[:8] == _MAGIC[0]:
        at = 8
        while at + 8 <= len(data):
            size, kind = struct.unpack(">I4s", data[at:at + 8])
            if kind == b"eXIf":
                exif = data[at + 8:at + 8 + size]
                break
            if kind in (b"IDAT", b"IEND"):
                break
            at += 12 + size
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        at = 12
        while at + 8 <= len(data):
            kind, size = struct.unpack("<4sI", data[at:at + 8])
            if kind == b"EXIF":
                exif = data[at + 8:at + 8 + size]
                exif = exif[6:] if exif[:6] == b"Exif\0\0" else exif
                break
            at += 8 + size + (size & 1)
    return _tiff_orientation(exif)


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 274 of the first IFD of a TIFF-structured EXIF block."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    try:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
            tag, kind, _, value = struct.unpack(order + "HHIH", entry[:10])
            if tag == 274 and kind == 3:  # SHORT
                return value if 1 <= value <= 8 else 1
    except struct.error:  # a damaged EXIF block: show the picture as stored
        pass
    return 1


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Grey, RGBA, 16-bit -> (H, W, 3) uint8 RGB (alpha is dropped)."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


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
