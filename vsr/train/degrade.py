"""Analog (VHS-like) degradation: a clean high-resolution image in, a plausible tape capture out.

The chain follows what a composite/VHS path does to a picture, at the low resolution:

1. downscale by the model scale (area averaging);
2. luma bandwidth loss: a horizontal windowed-sinc low-pass, which also rings;
3. sharpening of the deck/TV (unsharp mask): halos next to edges;
4. chroma: horizontal subsampling, bleed (horizontal blur) and a small shift against luma;
5. noise: luma grain and stronger, horizontally streaked chroma noise;
6. optional interlacing artefacts: one field dropped and interpolated (half vertical resolution);
7. compression through a real codec (JPEG, 4:2:0) as the capture/storage step.

Every random choice comes from :class:`DegradeParams`, drawn once with :meth:`Degradation.sample`
from an explicit generator: all frames of a clip share one draw ("one seed per clip"), only the
noise differs from frame to frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Range = tuple[float, float]


@dataclass
class DegradeConfig:
    """Ranges the parameters are drawn from (uniformly); a range (a, a) fixes the value."""
    luma_cutoff: Range = (0.45, 0.9)  # horizontal luma bandwidth, fraction of Nyquist
    sharpen: Range = (0.0, 0.8)  # unsharp-mask amount (halos)
    sharpen_radius: Range = (0.8, 1.6)  # its Gaussian sigma, LR pixels
    chroma_subsample: Range = (2.0, 4.0)  # horizontal chroma decimation factor
    chroma_bleed: Range = (0.5, 2.0)  # extra horizontal chroma blur (sigma, LR pixels)
    chroma_shift: Range = (-1.0, 1.0)  # chroma delay against luma, LR pixels
    luma_noise: Range = (0.0, 0.02)  # standard deviation on a 0..1 scale
    chroma_noise: Range = (0.0, 0.03)
    interlace: float = 0.0  # probability of dropping a field
    jpeg_quality: Range = (45.0, 90.0)

    def __post_init__(self) -> None:
        for name in ("luma_cutoff", "sharpen", "sharpen_radius", "chroma_subsample", "chroma_bleed",
                     "chroma_shift", "luma_noise", "chroma_noise", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: expected [low, high] with low <= high, got {[lo, hi]}")
        checks = {"luma_cutoff": (0.05, 1.0), "chroma_subsample": (1.0, 8.0), "jpeg_quality": (1.0, 100.0),
                  "sharpen": (0.0, 4.0), "sharpen_radius": (0.1, 8.0), "chroma_bleed": (0.0, 8.0),
                  "luma_noise": (0.0, 1.0), "chroma_noise": (0.0, 1.0)}
        for name, (a, b) in checks.items():
            lo, hi = getattr(self, name)
            if lo < a or hi > b:
                raise ValueError(f"{name}: expected values in [{a:g}, {b:g}], got {[lo, hi]}")
        if not 0.0 <= self.interlace <= 1.0:
            raise ValueError(f"interlace: expected a probability in [0, 1], got {self.interlace}")


@dataclass(frozen=True)
class DegradeParams:
    luma_cutoff: float
    sharpen: float
    sharpen_radius: float
    chroma_subsample: float
    chroma_bleed: float
    chroma_shift: float
    luma_noise: float
    chroma_noise: float
    interlace: bool
    interlace_field: int
    jpeg_quality: int


class Degradation:
    def __init__(self, *, config: DegradeConfig | None = None, scale: int = 4) -> None:
        self.config = config or DegradeConfig()
        self.scale = scale

    def sample(self, rng: np.random.Generator) -> DegradeParams:
        c = self.config

        def u(r: Range) -> float:
            return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])

        return DegradeParams(
            luma_cutoff=u(c.luma_cutoff), sharpen=u(c.sharpen), sharpen_radius=u(c.sharpen_radius),
            chroma_subsample=u(c.chroma_subsample), chroma_bleed=u(c.chroma_bleed),
            chroma_shift=u(c.chroma_shift), luma_noise=u(c.luma_noise), chroma_noise=u(c.chroma_noise),
            interlace=bool(rng.random() < c.interlace), interlace_field=int(rng.integers(2)),
            jpeg_quality=int(round(u(c.jpeg_quality))),
        )

    def __call__(self, hr: np.ndarray, params: DegradeParams, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 RGB, H and W multiples of the scale -> (H/s, W/s, 3) uint8 RGB.

        ``rng`` only draws the noise (per frame); everything else comes from ``params``.
        """
        assert hr.ndim == 3 and hr.shape[2] == 3 and hr.dtype == np.uint8, (hr.shape, hr.dtype)
        h, w = hr.shape[0] // self.scale, hr.shape[1] // self.scale
        img = hr[:h * self.scale, :w * self.scale]
        if self.scale > 1:
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb).astype(np.float32) / 255.0  # (h, w, 3) Y Cr Cb
        y, cr, cb = ycc[:, :, 0], ycc[:, :, 1], ycc[:, :, 2]
        p = params

        y = _hfilter(y, _sinc_lowpass(p.luma_cutoff))
        if p.sharpen > 0:
            y = y + p.sharpen * (y - cv2.GaussianBlur(y, (0, 0), sigmaX=p.sharpen_radius, sigmaY=0.01,
                                                        borderType=cv2.BORDER_REFLECT))
        cr, cb = (_chroma(ch, p) for ch in (cr, cb))
        if p.luma_noise > 0:
            y = y + rng.standard_normal(y.shape, dtype=np.float32) * p.luma_noise
        if p.chroma_noise > 0:
            streak = _gauss_kernel(1.5)  # tape chroma noise is smeared along the line
            for ch in (cr, cb):
                n = _hfilter(rng.standard_normal(ch.shape, dtype=np.float32), streak)
                ch += n * (p.chroma_noise / float(np.sqrt((streak ** 2).sum())))
        out = np.stack([y, cr, cb], axis=2)
        if p.interlace and h >= 4:
            out = _drop_field(out, p.interlace_field)
        out = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out = cv2.cvtColor(out, cv2.COLOR_YCrCb2RGB)
        return jpeg(out, p.jpeg_quality)

    def clip(self, frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """All frames of a clip share one parameter draw; the noise is new for every frame."""
        params = self.sample(rng)
        return [self(f, params, rng) for f in frames]


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """A round trip through libjpeg (4:2:0), in memory."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                            cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420])
    assert ok, "libjpeg failed to encode"
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _sinc_lowpass(cutoff: float, taps: int = 15) -> np.ndarray:
    """Windowed-sinc low-pass (cutoff as a fraction of Nyquist); its side lobes ring at edges."""
    n = np.arange(taps) - taps // 2
    k = cutoff * np.sinc(cutoff * n) * np.hamming(taps)
    return (k / k.sum()).astype(np.float32)


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    return (k / k.sum()).astype(np.float32)


def _hfilter(ch: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(ch, -1, kernel.reshape(1, -1), borderType=cv2.BORDER_REFLECT)


def _chroma(ch: np.ndarray, p: DegradeParams) -> np.ndarray:
    h, w = ch.shape
    sub = max(1, int(round(w / p.chroma_subsample)))
    small = cv2.resize(ch, (sub, h), interpolation=cv2.INTER_AREA)
    ch = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if p.chroma_bleed > 0:
        ch = _hfilter(ch, _gauss_kernel(p.chroma_bleed))
    if p.chroma_shift != 0:
        m = np.float32([[1, 0, p.chroma_shift], [0, 1, 0]])
        ch = cv2.warpAffine(ch, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return ch


def _drop_field(img: np.ndarray, field: int) -> np.ndarray:
    """Keep the lines of one field and interpolate the other (what a line-doubling capture does)."""
    out = img.copy()
    h = img.shape[0]
    for row in range(1 - field, h, 2):
        above, below = row - 1, row + 1
        if above < 0:
            out[row] = img[below]
        elif below >= h:
            out[row] = img[above]
        else:
            out[row] = 0.5 * (img[above] + img[below])
    return out
