"""Clip batches for a frame-recurrent generator, and held-out moving clips for its validation.

A recipe with ``data.clips`` trains on samples of ``clips.frames`` consecutive frames instead of single
patches: a virtual camera panning, zooming and rotating over a training photo (ground truth known), or
consecutive frames of one of ``clips.videos``, each clip degraded with one draw of ``data.degradation``
(:mod:`vsr.train.clips`). As in :mod:`vsr.train.data`, every sample is a pure function of
``(seed, step, index)``, so resuming needs no loader state and processes share a batch exactly. Held-out
photos never make training clips; validation runs the camera over them with a fixed draw each.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import VsrError
from . import clips
from .config import ClipsConfig, DataConfig, EvalConfig
from .data import MARGIN, Frame, prescale, to_tensor
from .degrade import Degradation


def camera(cfg: ClipsConfig) -> clips.CameraConfig:
    return clips.CameraConfig(shift=cfg.shift, zoom=cfg.zoom, rotate=cfg.rotate)


def camera_side(size: int, frames: int, cam: clips.CameraConfig) -> int:
    """The smallest photo side on which every camera path of ``frames`` frames of ``size`` HR px fits,
    whatever the draw (the fastest zoom-out and pan :func:`clips.camera_path` can pick)."""
    radius = math.exp((frames - 1) * math.log1p(cam.zoom)) * (size - 1) / 2 * math.sqrt(2) + 2
    return math.ceil(2 * radius + (frames - 1) * cam.shift) + 1


def load_videos(cfg: DataConfig, *, scale: int) -> list[tuple[str, list[np.ndarray]]]:
    """(name, frames) of each of ``clips.videos``, resized by data.prescale like the photos."""
    c = cfg.clips
    assert c is not None
    size = (cfg.patch + 2 * MARGIN) * scale
    out = []
    for v in c.videos:
        path = Path(v).expanduser()
        try:
            frames = clips.read_video(path, c.max_video_frames)
        except VsrError as e:
            raise VsrError(f"data.clips.videos: {e}") from None
        frames = [prescale(f, cfg.prescale) for f in frames]
        if len(frames) < c.frames:
            raise VsrError(f"data.clips.videos: {path} has {len(frames)} decodable frames; a clip needs {c.frames}")
        h, w = frames[0].shape[:2]
        if min(h, w) < size:
            raise VsrError(f"data.clips.videos: {path} is {w}x{h} after data.prescale; a clip needs {size} px "
                           f"(data.patch {cfg.patch} x scale {scale} + margin): lower data.patch")
        out.append((path.name, frames))
    return out


class ClipData:
    """Clip samples as a pure function of (step, index)."""

    def __init__(self, *, frames: list[Frame], cfg: DataConfig, scale: int, seed: int) -> None:
        assert cfg.clips is not None and cfg.lq is None
        self.cfg, self.clips, self.scale, self.seed = cfg, cfg.clips, scale, seed
        self.frames = frames
        self.camera = camera(cfg.clips)
        self.degrade = Degradation(config=cfg.degradation, scale=scale)
        self.videos = load_videos(cfg, scale=scale)
        # with videos, the share of clips from them; without, every clip is the camera's
        self.video_share = self.clips.video_share if self.videos else 0.0
        size = (cfg.patch + 2 * MARGIN) * scale
        need = camera_side(size, self.clips.frames, self.camera)
        for f in frames if self.video_share < 1 else []:
            h, w = f.hq.shape[:2]
            if min(h, w) < need:
                raise VsrError(f"data.frames: {f.name} is {w}x{h} after data.prescale; a moving camera clip of "
                               f"{self.clips.frames} frames of {cfg.patch} LR px needs {need} px: lower "
                               f"data.patch or data.clips.shift/zoom, or remove it")
        # photos in proportion to their area, so that every region is equally likely (as for patches);
        # videos in proportion to their frames
        areas = np.array([f.hq.shape[0] * f.hq.shape[1] for f in frames], dtype=np.float64)
        self.photo_weights = areas / areas.sum()
        lengths = np.array([len(v) for _, v in self.videos], dtype=np.float64)
        self.video_weights = lengths / lengths.sum() if self.videos else lengths

    def sample(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(lq (T, p, p, 3) uint8, hq (T, sp, sp, 3) uint8, corners A and B (0-3, distinct) for the
        translational loss: one crop position for the whole clip)."""
        rng = np.random.default_rng([self.seed, step, index])
        p, s, n = self.cfg.patch, self.scale, self.clips.frames
        hflip, vflip = (rng.random(2) < 0.5) & self.cfg.flips
        corner = int(rng.integers(4))
        corner_b = (corner + int(rng.integers(1, 4))) % 4
        fy, fx = -1 if vflip else 1, -1 if hflip else 1
        # flips before degrading: the tape's artefacts are horizontal and must stay so
        if rng.random() < self.video_share:
            _, video = self.videos[int(rng.choice(len(self.videos), p=self.video_weights))]
            lq, hq = clips.video_clip([f[::fy, ::fx] for f in video], self.degrade, rng, frames=n, patch=p)
        else:
            photo = self.frames[int(rng.choice(len(self.frames), p=self.photo_weights))].hq
            size = (p + 2 * MARGIN) * s
            path = clips.camera_path(photo.shape[:2], size=size, frames=n, rng=rng, camera=self.camera)
            big = [clips.render(photo, path, i, size)[::fy, ::fx] for i in range(n)]
            lq, hq = clips.degrade_clip(big, self.degrade, rng, p)
        return lq, hq, corner, corner_b

    def batch(self, step: int, indices: range | list[int]) -> dict[str, torch.Tensor]:
        """lq (B, T, 3, p, p), hq (B, T, 3, sp, sp) in [0, 1]; corner, corner_b (B,)."""
        lqs, hqs, corners, corners_b = zip(*(self.sample(step, i) for i in indices))
        return {"lq": clip_tensor(np.stack(lqs)), "hq": clip_tensor(np.stack(hqs)),
                "corner": torch.tensor(corners, dtype=torch.long),
                "corner_b": torch.tensor(corners_b, dtype=torch.long)}


def clip_tensor(clips_u8: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, T, 3, H, W) float32 in [0, 1]."""
    b, t = clips_u8.shape[:2]
    flat = to_tensor(clips_u8.reshape(b * t, *clips_u8.shape[2:]))
    return flat.reshape(b, t, *flat.shape[1:])


def validation_clips(frames: list[Frame], *, cfg: DataConfig, ev: EvalConfig,
                     scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, lq (T, h, w, 3), hq (T, sh, sw, 3)) uint8: the camera moving over each held-out photo,
    ``eval.frames`` frames of ``eval.crop`` HR px (0: half the photo's smaller side), each clip
    degraded with a fixed draw."""
    assert cfg.clips is not None
    n = ev.frames or cfg.clips.frames
    degrade = Degradation(config=cfg.degradation, scale=scale)
    out = []
    for i, f in enumerate(frames[:ev.max_images]):
        h, w = f.hq.shape[:2]
        patch = (ev.crop or min(h, w) // 2) // scale
        if patch * scale < 48:  # the Farneback crop tOF is measured on
            raise VsrError(f"eval.crop: validation clips need at least 48 HR px for tOF, got {patch * scale}")
        rng = np.random.default_rng([ev.seed, i])
        try:
            lq, hq = clips.camera_clip(f.hq, degrade, rng, frames=n, patch=patch, camera=camera(cfg.clips))
        except VsrError as e:
            raise VsrError(f"eval: held-out {f.name}: {e}; lower eval.crop") from None
        out.append((f.name, lq, hq))
    return out
