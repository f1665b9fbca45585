"""Training clips for the temporal (recurrent) model: a few consecutive frames, ground truth and degraded.

Two sources:

- a virtual camera over a photograph (:func:`camera_clip`): it pans, zooms and rotates at a constant
  rate drawn per clip (sub-pixel steps), so the motion is smooth and known; each frame is the photo
  resampled with one interpolation (bicubic, ``cv2.warpAffine``) for every frame;
- consecutive frames of a real video (:func:`video_clip`, frames from :func:`read_video`), one crop
  position for the whole clip.

Each clip is degraded with ONE draw of the degradation model for all its frames
(:meth:`Degradation.clip`: the same kernel, filters, noise levels and codec settings, the clip through
the codec as one stream; only the noise itself is new per frame). As in :mod:`vsr.train.data`, a margin
of ``MARGIN`` LR pixels around the patch is degraded too and cut off, so filter borders do not show.
Everything random comes from the generator the caller passes in: the same seed, the same clip.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from ..errors import VsrError
from ..video.frames import rgb_frames
from .data import MARGIN
from .degrade import Degradation

INTERPOLATION = cv2.INTER_CUBIC  # every frame of a camera clip is resampled the same way


@dataclass(frozen=True)
class CameraConfig:
    """The largest rates a clip's camera is drawn with (uniformly, each sign equally likely)."""
    shift: float = 2.0  # pan, HR pixels per frame along each axis
    zoom: float = 0.01  # relative change of the field of view per frame
    rotate: float = 0.5  # degrees per frame


@dataclass(frozen=True)
class CameraPath:
    """Where the camera looks in the photo: frame i's centre is ``center + i * velocity`` (photo pixels),
    its field of view ``exp(i * zoom_rate)`` times frame 0's, turned by ``i * rotate_rate`` degrees."""
    center: tuple[float, float]  # (x, y)
    velocity: tuple[float, float]  # (dx, dy) per frame
    zoom_rate: float
    rotate_rate: float

    def matrix(self, i: int, size: int) -> np.ndarray:
        """(2, 3) affine map from frame i's pixel (x, y) to the photo's."""
        z = math.exp(i * self.zoom_rate)
        a = math.radians(i * self.rotate_rate)
        lin = z * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        o = (size - 1) / 2  # the frame's centre pixel
        c = np.array(self.center) + i * np.array(self.velocity)
        return np.concatenate([lin, (c - lin @ [o, o])[:, None]], axis=1)


def camera_path(photo_hw: tuple[int, int], *, size: int, frames: int, rng: np.random.Generator,
                camera: CameraConfig = CameraConfig()) -> CameraPath:
    """A smooth camera path whose frames (size x size) all lie inside the photo."""
    h, w = photo_hw
    vx, vy = (float(rng.uniform(-camera.shift, camera.shift)) for _ in range(2))
    zoom_rate = float(rng.uniform(-1, 1)) * math.log1p(camera.zoom)
    rotate_rate = float(rng.uniform(-camera.rotate, camera.rotate))
    # the centre of frame 0 such that every frame's footprint (a circle around its centre) fits
    radius = [math.exp(i * zoom_rate) * (size - 1) / 2 * math.sqrt(2) + 2 for i in range(frames)]  # +2: bicubic
    lo_x = max(r - i * vx for i, r in enumerate(radius))
    hi_x = min(w - 1 - r - i * vx for i, r in enumerate(radius))
    lo_y = max(r - i * vy for i, r in enumerate(radius))
    hi_y = min(h - 1 - r - i * vy for i, r in enumerate(radius))
    if hi_x < lo_x or hi_y < lo_y:
        raise VsrError(f"a photo of {w}x{h} is too small for a moving camera clip of {frames} frames of "
                       f"{size} px (it needs about {2 * max(radius) + camera.shift * frames:.0f} px)")
    center = (float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y)))
    return CameraPath(center=center, velocity=(vx, vy), zoom_rate=zoom_rate, rotate_rate=rotate_rate)


def render(photo: np.ndarray, path: CameraPath, i: int, size: int) -> np.ndarray:
    """Frame i of the camera path: (size, size, 3) uint8."""
    return cv2.warpAffine(photo, path.matrix(i, size), (size, size), flags=INTERPOLATION | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def degrade_clip(big: Sequence[np.ndarray], degradation: Degradation, rng: np.random.Generator,
                 patch: int) -> tuple[np.ndarray, np.ndarray]:
    """HR frames of (patch + 2 * MARGIN) * s px through one degradation draw -> (lq (T, p, p, 3),
    hq (T, sp, sp, 3)) uint8, the margins cut off."""
    s, m = degradation.scale, MARGIN
    lq = degradation.clip([np.ascontiguousarray(f) for f in big], rng)
    lq = np.stack([f[m:m + patch, m:m + patch] for f in lq])
    hq = np.stack([f[m * s:(m + patch) * s, m * s:(m + patch) * s] for f in big])
    return np.ascontiguousarray(lq), np.ascontiguousarray(hq)


def _check_rgb8(img: np.ndarray, what: str) -> None:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise VsrError(f"{what}: expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")


def camera_clip(photo: np.ndarray, degradation: Degradation, rng: np.random.Generator, *, frames: int = 5,
                patch: int = 32, camera: CameraConfig = CameraConfig()) -> tuple[np.ndarray, np.ndarray]:
    """A virtual camera moving over ``photo`` (H, W, 3) uint8: (lq (T, p, p, 3), hq (T, sp, sp, 3)) uint8."""
    _check_rgb8(photo, "camera clip")
    size = (patch + 2 * MARGIN) * degradation.scale
    path = camera_path(photo.shape[:2], size=size, frames=frames, rng=rng, camera=camera)
    return degrade_clip([render(photo, path, i, size) for i in range(frames)], degradation, rng, patch)


def video_clip(video: Sequence[np.ndarray], degradation: Degradation, rng: np.random.Generator, *,
               frames: int = 5, patch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` consecutive frames of a decoded video (a sequence of (H, W, 3) uint8), one crop for
    all: (lq (T, p, p, 3), hq (T, sp, sp, 3)) uint8."""
    if len(video) < frames:
        raise VsrError(f"video clip: {frames} frames wanted, the video has {len(video)}")
    _check_rgb8(video[0], "video clip")
    s = degradation.scale
    size = (patch + 2 * MARGIN) * s
    h, w = video[0].shape[:2]
    if min(h, w) < size:
        raise VsrError(f"video clip: frames of {w}x{h} are smaller than a patch of {patch} LR px with its "
                       f"margin ({size} px at x{s})")
    start = int(rng.integers(len(video) - frames + 1))
    y, x = int(rng.integers((h - size) // s + 1)) * s, int(rng.integers((w - size) // s + 1)) * s
    big = [video[start + i][y:y + size, x:x + size] for i in range(frames)]
    return degrade_clip(big, degradation, rng, patch)


def read_video(path: str | Path, max_frames: int | None = None) -> list[np.ndarray]:
    """The decodable frames of a video in order, (H, W, 3) uint8 RGB each, decoded as `vsr upscale` decodes
    them; packets that fail to decode (a damaged file) are skipped, so a gap there is taken as consecutive."""
    try:
        return list(itertools.islice(rgb_frames(path, skip_damaged=True), max_frames))
    except av.error.FFmpegError as e:
        raise VsrError(f"cannot decode {path}: {e}") from None
