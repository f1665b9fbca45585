"""Training and validation data: frames or photos (or a video's frames), degraded on the fly.

Every training sample is a pure function of ``(seed, step, index)``: which image, where the crop
is, the flips, the degradation draw and its noise. Resuming therefore needs no data-loader state,
and N processes that each take their share of the indices see exactly the samples that one process
with the whole batch would see.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from ..errors import VsrError
from ..images import IMAGE_SUFFIXES, read_image, to_rgb8
from ..video.frames import rgb_frames
from ..video.probe import VIDEO_SUFFIXES, probe
from .config import DataConfig, EvalConfig
from .degrade import Degradation

MARGIN = 4  # low-resolution pixels degraded around a patch so that filter borders don't show


@dataclass
class Frame:
    name: str
    hq: np.ndarray  # (H, W, 3) uint8 RGB
    lq: np.ndarray | None = None  # (H/s, W/s, 3) uint8 RGB in paired mode


def list_images(folder: Path, what: str = "data.frames") -> list[Path]:
    if not folder.exists():
        raise VsrError(f"{what}: {folder} does not exist")
    if not folder.is_dir():
        raise VsrError(f"{what}: {folder} is not a folder of images nor a video file")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise VsrError(f"{what}: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def video_frames(path: Path, max_frames: int) -> list[Frame]:
    """Up to ``max_frames`` frames spread over the video, decoded as `vsr upscale` decodes them."""
    try:
        info = probe(path)
        every = max(1, (info.frames or 0) // max_frames)
        out = []
        for i, frame in enumerate(rgb_frames(path, info, skip_damaged=True)):
            if i % every == 0:
                out.append(Frame(f"{path.stem}-{i:06d}", frame))
                if len(out) >= max_frames:
                    break
    except (VsrError, av.error.FFmpegError) as e:
        raise VsrError(f"data.frames: cannot decode {path}: {e}") from None
    if not out:
        raise VsrError(f"data.frames: {path} has no decodable frames")
    return out


def prescale(img: np.ndarray, factor: float, min_side: int = 0) -> np.ndarray:
    if factor == 1.0 or min(img.shape[:2]) < min_side:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def check_source(cfg: DataConfig) -> None:
    """The cheap checks (paths exist, folders not empty), before anything is decoded."""
    if cfg.frames is None:
        raise VsrError("data.frames: no training frames given (a folder of images or a video file)")
    src = Path(cfg.frames).expanduser()
    if not (src.is_file() and src.suffix.lower() in VIDEO_SUFFIXES):
        files = list_images(src)
        names = {p.name for p in files}
        unknown = [n for n in cfg.holdout if n not in names]
        if unknown:
            raise VsrError(f"data.holdout: {unknown[0]!r} is not in {src}")
        if len(names - set(cfg.holdout)) == 0:
            raise VsrError(f"data.holdout: every image of {src} is held out; nothing is left to train on")
    if cfg.lq is not None:
        list_images(Path(cfg.lq).expanduser(), "data.lq")
    if cfg.val_frames is not None:
        list_images(Path(cfg.val_frames).expanduser(), "data.val_frames")
    for v in cfg.clips.videos if cfg.clips else []:
        if not Path(v).expanduser().is_file():
            raise VsrError(f"data.clips.videos: {v} does not exist")


def load_frames(cfg: DataConfig, *, scale: int) -> tuple[list[Frame], list[Frame]]:
    """(training frames, held-out frames); every training frame is checked against the patch size."""
    check_source(cfg)
    src = Path(cfg.frames).expanduser()
    need = cfg.patch * scale
    if src.is_file():
        train = [Frame(f.name, prescale(f.hq, cfg.prescale, cfg.prescale_min_side))
                 for f in video_frames(src, cfg.max_frames)]
        held: list[Frame] = []
    else:
        train, held = [], []
        for p in list_images(src):
            hq = prescale(to_rgb8(read_image(p)), cfg.prescale, cfg.prescale_min_side)
            frame = Frame(p.name, hq)
            if cfg.lq is not None:
                lq_path = Path(cfg.lq).expanduser() / p.name
                if not lq_path.is_file():
                    raise VsrError(f"data.lq: {lq_path} is missing (paired with {p})")
                frame.lq = to_rgb8(read_image(lq_path))
                lh, lw = frame.lq.shape[:2]
                if hq.shape[:2] != (lh * scale, lw * scale):
                    raise VsrError(f"data.lq: {lq_path} is {lw}x{lh}; expected {hq.shape[1] // scale}x"
                                   f"{hq.shape[0] // scale} (ground truth / {scale})")
            (held if p.name in cfg.holdout else train).append(frame)
    for f in train:
        h, w = f.hq.shape[:2]
        if min(h, w) < need + 2 * MARGIN * scale * (cfg.lq is None):
            raise VsrError(f"data.frames: {f.name} is {w}x{h} after data.prescale; a training patch needs "
                           f"{need + 2 * MARGIN * scale * (cfg.lq is None)} px (data.patch {cfg.patch} x scale "
                           f"{scale}{' + margin' if cfg.lq is None else ''}): lower data.patch or remove it")
    if cfg.val_frames is not None:
        for p in list_images(Path(cfg.val_frames).expanduser(), "data.val_frames"):
            held.append(Frame(p.name, prescale(to_rgb8(read_image(p)), cfg.prescale, cfg.prescale_min_side)))
    return train, held


class TrainData:
    """Samples as a pure function of (step, index)."""

    def __init__(self, *, frames: list[Frame], cfg: DataConfig, scale: int, seed: int) -> None:
        self.frames, self.cfg, self.scale, self.seed = frames, cfg, scale, seed
        self.degrade = Degradation(config=cfg.degradation, scale=scale)
        # pick images in proportion to their area, so that every region is equally likely
        areas = np.array([f.hq.shape[0] * f.hq.shape[1] for f in frames], dtype=np.float64)
        self.weights = areas / areas.sum()

    def sample(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
        """(lq (p, p, 3) uint8, hq (sp, sp, 3) uint8, corners A and B (0-3, distinct) for the
        translational loss, the degradation's mixture part: -1 for the model itself or paired data)."""
        rng = np.random.default_rng([self.seed, step, index])
        frame = self.frames[int(rng.choice(len(self.frames), p=self.weights))]
        p, s = self.cfg.patch, self.scale
        hflip, vflip = (rng.random(2) < 0.5) & self.cfg.flips
        corner = int(rng.integers(4))
        corner_b = (corner + int(rng.integers(1, 4))) % 4
        if frame.lq is not None:
            lh, lw = frame.lq.shape[:2]
            y, x = int(rng.integers(lh - p + 1)), int(rng.integers(lw - p + 1))
            lq = frame.lq[y:y + p, x:x + p]
            hq = frame.hq[y * s:(y + p) * s, x * s:(x + p) * s]
        else:
            m = MARGIN
            h, w = frame.hq.shape[:2]
            size = (p + 2 * m) * s
            lo, hi = self.cfg.rescale
            if hi < 1.0 or lo < hi:  # a region 1/f larger, shrunk to the patch
                src = min(h, w, int(np.ceil(size / rng.uniform(lo, hi))))
                y, x = int(rng.integers(h - src + 1)), int(rng.integers(w - src + 1))
                big = cv2.resize(frame.hq[y:y + src, x:x + src], (size, size), interpolation=cv2.INTER_AREA)
            else:
                y = int(rng.integers(h // s - p - 2 * m + 1)) * s
                x = int(rng.integers(w // s - p - 2 * m + 1)) * s
                big = frame.hq[y:y + size, x:x + size]
            # flips before degrading: the tape's artefacts are horizontal and must stay so
            big = big[::-1 if vflip else 1, ::-1 if hflip else 1]
            params = self.degrade.sample(rng)
            lq = self.degrade(np.ascontiguousarray(big), params, rng)[m:m + p, m:m + p]
            hq = big[m * s:(m + p) * s, m * s:(m + p) * s]
            return lq, np.ascontiguousarray(hq), corner, corner_b, params.part
        lq, hq = lq[::-1 if vflip else 1, ::-1 if hflip else 1], hq[::-1 if vflip else 1, ::-1 if hflip else 1]
        return np.ascontiguousarray(lq), np.ascontiguousarray(hq), corner, corner_b, -1

    def batch(self, step: int, indices: range | list[int]) -> dict[str, torch.Tensor]:
        """lq (B, 3, p, p), hq (B, 3, sp, sp) in [0, 1]; corner, corner_b, part (B,)."""
        lqs, hqs, corners, corners_b, parts = zip(*(self.sample(step, i) for i in indices))
        return {"lq": to_tensor(np.stack(lqs)), "hq": to_tensor(np.stack(hqs)),
                "corner": torch.tensor(corners, dtype=torch.long),
                "corner_b": torch.tensor(corners_b, dtype=torch.long),
                "part": torch.tensor(parts, dtype=torch.long)}


def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def validation_set(frames: list[Frame], *, cfg: DataConfig, ev: EvalConfig,
                   scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, lq, hq) triples: centre crops of the held-out frames, degraded with a fixed draw each."""
    degrade = Degradation(config=cfg.degradation, scale=scale)
    out = []
    for i, f in enumerate(frames[:ev.max_images]):
        hq = f.hq
        h, w = hq.shape[:2]
        ch, cw = (min(h, ev.crop), min(w, ev.crop)) if ev.crop else (h, w)
        ch, cw = ch // scale * scale, cw // scale * scale
        y, x = (h - ch) // 2 // scale * scale, (w - cw) // 2 // scale * scale
        hq = np.ascontiguousarray(hq[y:y + ch, x:x + cw])
        if f.lq is not None:
            lq = np.ascontiguousarray(f.lq[y // scale:(y + ch) // scale, x // scale:(x + cw) // scale])
        else:
            rng = np.random.default_rng([ev.seed, i])
            lq = degrade(hq, degrade.sample(rng), rng)
        out.append((f.name, lq, hq))
    return out
