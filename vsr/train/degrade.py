"""Analog (VHS-like) degradation: a clean high-resolution image in, a plausible tape capture out.

The chain follows what a composite/VHS path and a capture card do to a picture, at the low resolution:

1. downscale by the model scale with one of several kernels (area; bicubic, bilinear and Lanczos
   point-sampled as cheap scalers do, aliasing; bicubic and bilinear antialiased, their kernel widened
   by the factor as ffmpeg's, PIL's and MATLAB's are; or a Gaussian pre-blur: optics and scanning
   differ from source to source);
2. luma bandwidth loss: a horizontal windowed-sinc low-pass, which also rings;
3. sharpening of the deck/TV (unsharp mask): halos next to edges;
4. chroma: horizontal subsampling, bleed (horizontal blur) and a small shift against luma;
5. noise: white luma grain, correlated tape noise (streaked along the line, per-line banding) and
   stronger, horizontally streaked chroma noise; dropouts (short white or repeated-line streaks);
6. interlacing undone by a deinterlacer (line doubling, blending or none: combing), with motion
   between the fields;
7. the capture card's codec, a real encoder at a random quality: JPEG, H.264, MPEG-2, MJPEG (4:2:2),
   DV (4:1:1), or none. A clip goes through the encoder as one stream (predicted frames included).

A ``mix`` of further models (each with its share of the draws) makes a mixture, e.g. the narrow VHS model
beside the wide one. With probability ``digital`` the source is digital instead (a DVD, a camera's file, a web video): steps
2-6 are skipped and the downscaled picture only gets a sensor's RGB noise before the codec. A model
trained on analog draws alone learns that every input is soft and over-sharpens clean ones.

Every random choice comes from :class:`DegradeParams`, drawn once with :meth:`Degradation.sample`
from an explicit generator: all frames of a clip share one draw ("one seed per clip"), only the
noise differs from frame to frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import capture, tape

Range = tuple[float, float]
DOWNSCALE = {"area": cv2.INTER_AREA, "bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR,
             "lanczos": cv2.INTER_LANCZOS4, "gaussian": cv2.INTER_AREA,
             "bicubic-aa": "bicubic", "bilinear-aa": "bilinear"}  # antialiased: torch's resampling
CODECS = ("jpeg", *capture.CODECS, "none")
DEINTERLACE = ("double", "blend", "weave")


def _choice_check(name: str, weights: dict[str, float], allowed) -> None:
    unknown = sorted(set(weights) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown choice {unknown[0]!r}; expected some of {', '.join(allowed)}")
    if any(v < 0 for v in weights.values()) or not sum(weights.values()) > 0:
        raise ValueError(f"{name}: expected weights >= 0 with a positive sum, got {weights}")


def _pick(weights: dict[str, float], rng: np.random.Generator) -> str:
    names = sorted(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


@dataclass
class DegradeConfig:
    """Ranges the parameters are drawn from (uniformly); a range (a, a) fixes the value. Choices
    (downscale, codecs, deinterlace) are weights: how often each is drawn."""
    downscale: dict[str, float] = field(default_factory=lambda: {"area": 1.0, "bicubic": 1.0, "bilinear": 0.5,
                                                                 "lanczos": 0.5, "gaussian": 1.0})
    blur: Range = (0.3, 1.2)  # "gaussian": sigma of the pre-blur, in LR pixels (optics, camera tubes, VHS luma)
    luma_cutoff: Range = (0.45, 0.9)  # horizontal luma bandwidth, fraction of Nyquist
    sharpen: Range = (0.0, 0.8)  # unsharp-mask amount (halos)
    sharpen_radius: Range = (0.8, 1.6)  # its Gaussian sigma, LR pixels
    chroma_subsample: Range = (2.0, 4.0)  # horizontal chroma decimation factor
    chroma_bleed: Range = (0.5, 2.0)  # extra horizontal chroma blur (sigma, LR pixels)
    chroma_shift: Range = (-1.0, 1.0)  # chroma delay against luma, LR pixels
    chroma_shift_v: Range = (0.0, 0.0)  # its vertical part, LR lines (a deck's comb filter delays chroma a line)
    luma_noise: Range = (0.0, 0.02)  # standard deviation on a 0..1 scale
    chroma_noise: Range = (0.0, 0.03)
    tape_noise: Range = (0.0, 0.03)  # correlated luma noise, std on a 0..1 scale
    tape_streak: Range = (0.5, 3.0)  # its smear along the line (sigma, LR pixels)
    tape_banding: Range = (0.0, 0.01)  # per-line offset (std)
    dropouts: Range = (0.0, 0.3)  # streaks per 10,000 LR pixels
    head_switching: Range = (0.0, 0.0)  # lines of the torn head-switching band at the bottom (0: none; at most
    # a quarter of the picture)
    head_skew: Range = (0.0, 0.0)  # how far its last line is torn sideways, LR pixels
    interlace: float = 0.0  # probability that the picture was interlaced and deinterlaced
    deinterlace: dict[str, float] = field(default_factory=lambda: {"double": 1.0, "blend": 1.0, "weave": 0.2})
    interlace_motion: Range = (0.0, 1.5)  # picture motion between the two fields, LR pixels
    codecs: dict[str, float] = field(default_factory=lambda: {"jpeg": 1.0, "h264": 1.0, "mpeg2": 1.0, "mjpeg": 0.5,
                                                              "dv": 0.5, "none": 0.25})
    codec_quality: Range = (0.3, 1.0)  # 0 worst .. 1 best (h264, mpeg2, mjpeg; DV has a fixed rate)
    jpeg_quality: Range = (45.0, 90.0)
    digital: float = 0.0  # probability that the source is digital: steps 2-6 skipped
    sensor_noise: Range = (0.0, 0.04)  # a digital source's RGB Gaussian noise, std on a 0..1 scale
    # other degradation models, each drawn instead of this one for its share of the draws (the shares
    # sum to at most 1; the rest is this model's): a mixture keeps sources the wide model rarely draws
    mix: list[MixPart] = field(default_factory=list)

    def __post_init__(self) -> None:
        _choice_check("downscale", self.downscale, DOWNSCALE)
        _choice_check("codecs", self.codecs, CODECS)
        _choice_check("deinterlace", self.deinterlace, DEINTERLACE)
        for name in ("blur", "luma_cutoff", "sharpen", "sharpen_radius", "chroma_subsample", "chroma_bleed",
                     "chroma_shift", "chroma_shift_v", "head_switching", "head_skew", "luma_noise",
                     "chroma_noise", "tape_noise", "tape_streak", "tape_banding",
                     "dropouts", "interlace_motion", "codec_quality", "jpeg_quality", "sensor_noise"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: expected [low, high] with low <= high, got {[lo, hi]}")
        checks = {"luma_cutoff": (0.05, 1.0), "chroma_subsample": (1.0, 8.0), "jpeg_quality": (1.0, 100.0),
                  "sharpen": (0.0, 4.0), "sharpen_radius": (0.1, 8.0), "chroma_bleed": (0.0, 8.0),
                  "luma_noise": (0.0, 1.0), "chroma_noise": (0.0, 1.0), "blur": (0.0, 8.0),
                  "tape_noise": (0.0, 1.0), "tape_streak": (0.0, 16.0), "tape_banding": (0.0, 1.0),
                  "chroma_shift_v": (-4.0, 4.0), "head_switching": (0.0, 32.0), "head_skew": (0.0, 64.0),
                  "dropouts": (0.0, 100.0), "interlace_motion": (-8.0, 8.0), "codec_quality": (0.0, 1.0),
                  "sensor_noise": (0.0, 1.0)}
        for name, (a, b) in checks.items():
            lo, hi = getattr(self, name)
            if lo < a or hi > b:
                raise ValueError(f"{name}: expected values in [{a:g}, {b:g}], got {[lo, hi]}")
        for name in ("interlace", "digital"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= sum(m.share for m in self.mix) <= 1.0 or any(m.share < 0 for m in self.mix):
            raise ValueError(f"mix: expected shares >= 0 that sum to at most 1, got {[m.share for m in self.mix]}")


@dataclass
class MixPart:
    """One part of a mixture: a degradation model and the share of the draws it takes."""
    share: float
    config: DegradeConfig = field(default_factory=DegradeConfig)


@dataclass(frozen=True)
class DegradeParams:
    downscale: str
    blur: float
    luma_cutoff: float
    sharpen: float
    sharpen_radius: float
    chroma_subsample: float
    chroma_bleed: float
    chroma_shift: float
    luma_noise: float
    chroma_noise: float
    tape_noise: float
    tape_streak: float
    tape_banding: float
    dropouts: float
    interlace: bool
    interlace_field: int
    deinterlace: str
    interlace_motion: float
    codec: str
    codec_quality: float
    jpeg_quality: int
    digital: bool = False
    sensor_noise: float = 0.0
    chroma_shift_v: float = 0.0
    head_switching: int = 0
    head_skew: float = 0.0
    part: int = -1  # the mixture part that drew these (an index into ``mix``; -1: the model itself)


class Degradation:
    def __init__(self, *, config: DegradeConfig | None = None, scale: int = 4) -> None:
        self.config = config or DegradeConfig()
        self.scale = scale

    def sample(self, rng: np.random.Generator) -> DegradeParams:
        c = self.config
        if c.mix:  # one more draw picks the part (a config without a mixture draws what it always drew)
            u = float(rng.random())
            for k, part in enumerate(c.mix):
                if u < part.share:
                    return replace(Degradation(config=part.config, scale=self.scale).sample(rng), part=k)
                u -= part.share

        def u(r: Range) -> float:
            return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])

        return DegradeParams(
            luma_cutoff=u(c.luma_cutoff), sharpen=u(c.sharpen), sharpen_radius=u(c.sharpen_radius),
            chroma_subsample=u(c.chroma_subsample), chroma_bleed=u(c.chroma_bleed),
            chroma_shift=u(c.chroma_shift), luma_noise=u(c.luma_noise), chroma_noise=u(c.chroma_noise),
            interlace=bool(rng.random() < c.interlace), interlace_field=int(rng.integers(2)),
            jpeg_quality=int(round(u(c.jpeg_quality))),
            # drawn after the original ones, so that a recipe without them draws what it always drew
            downscale=_pick(c.downscale, rng), blur=u(c.blur), tape_noise=u(c.tape_noise),
            tape_streak=u(c.tape_streak), tape_banding=u(c.tape_banding), dropouts=u(c.dropouts),
            deinterlace=_pick(c.deinterlace, rng), interlace_motion=u(c.interlace_motion),
            codec=_pick(c.codecs, rng), codec_quality=u(c.codec_quality),
            digital=bool(rng.random() < c.digital), sensor_noise=u(c.sensor_noise),
            # tape defects (vsr.train.tape), drawn only where a recipe gives them a range
            chroma_shift_v=u(c.chroma_shift_v), head_switching=int(round(u(c.head_switching))),
            head_skew=u(c.head_skew),
        )

    def __call__(self, hr: np.ndarray, params: DegradeParams, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 RGB, H and W multiples of the scale -> (H/s, W/s, 3) uint8 RGB.

        ``rng`` only draws the noise (per frame); everything else comes from ``params``.
        """
        return self._compress([self._analog(hr, params, rng)], params)[0]

    def _analog(self, hr: np.ndarray, params: DegradeParams, rng: np.random.Generator) -> np.ndarray:
        """Steps 1-6: one frame, (H, W, 3) uint8 RGB -> (H/s, W/s, 3) uint8 RGB."""
        assert hr.ndim == 3 and hr.shape[2] == 3 and hr.dtype == np.uint8, (hr.shape, hr.dtype)
        h, w = hr.shape[0] // self.scale, hr.shape[1] // self.scale
        img = hr[:h * self.scale, :w * self.scale]
        p = params
        if p.downscale == "gaussian":
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=p.blur * self.scale, borderType=cv2.BORDER_REFLECT)
        if self.scale > 1 and p.downscale.endswith("-aa"):
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=(h, w), mode=DOWNSCALE[p.downscale], antialias=True, align_corners=False)
            img = t.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)
        elif self.scale > 1:
            img = cv2.resize(img, (w, h), interpolation=DOWNSCALE[p.downscale])
        if p.digital:
            if p.sensor_noise <= 0:
                return np.ascontiguousarray(img)
            noisy = img.astype(np.float32) + rng.standard_normal(img.shape, dtype=np.float32) * (255 * p.sensor_noise)
            return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
        ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb).astype(np.float32) / 255.0  # (h, w, 3) Y Cr Cb
        y, cr, cb = ycc[:, :, 0], ycc[:, :, 1], ycc[:, :, 2]

        y = _hfilter(y, _sinc_lowpass(p.luma_cutoff))
        if p.sharpen > 0:
            y = y + p.sharpen * (y - cv2.GaussianBlur(y, (0, 0), sigmaX=p.sharpen_radius, sigmaY=0.01,
                                                        borderType=cv2.BORDER_REFLECT))
        cr, cb = (_chroma(ch, p) for ch in (cr, cb))
        if p.luma_noise > 0:
            y = y + rng.standard_normal(y.shape, dtype=np.float32) * p.luma_noise
        if p.tape_noise > 0 or p.tape_banding > 0:
            y = y + capture.tape_noise(y.shape, strength=p.tape_noise, streak=p.tape_streak,
                                       banding=p.tape_banding, rng=rng)
        if p.dropouts > 0:
            y = capture.dropouts(y, rate=p.dropouts, rng=rng)
        if p.chroma_noise > 0:
            streak = _gauss_kernel(1.5)  # tape chroma noise is smeared along the line
            for ch in (cr, cb):
                n = _hfilter(rng.standard_normal(ch.shape, dtype=np.float32), streak)
                ch += n * (p.chroma_noise / float(np.sqrt((streak ** 2).sum())))
        out = np.stack([y, cr, cb], axis=2)
        rows = min(p.head_switching, out.shape[0] // 4)
        if rows:  # the tape's own band at the bottom of the picture, before the capture deinterlaces it
            out = tape.head_switching(out * 255.0, rows, p.head_skew, rng, blank=(0.0, 128.0, 128.0)) / 255.0
        if p.interlace:
            out = capture.interlace(out, mode=p.deinterlace, motion=p.interlace_motion, field=p.interlace_field)
        out = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return cv2.cvtColor(out, cv2.COLOR_YCrCb2RGB)

    def _compress(self, frames: list[np.ndarray], p: DegradeParams) -> list[np.ndarray]:
        """Step 7: the capture card's codec, over the whole clip."""
        if p.codec == "jpeg":
            return [jpeg(f, p.jpeg_quality) for f in frames]
        if p.codec == "none":
            return frames
        return capture.codec_roundtrip(frames, p.codec, p.codec_quality)

    def clip(self, frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """All frames of a clip share one parameter draw; the noise is new for every frame."""
        params = self.sample(rng)
        return self._compress([self._analog(f, params, rng) for f in frames], params)


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
    if p.chroma_shift != 0 or p.chroma_shift_v != 0:
        m = np.float32([[1, 0, p.chroma_shift], [0, 1, p.chroma_shift_v]])
        ch = cv2.warpAffine(ch, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return ch
