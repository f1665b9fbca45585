"""`vsr demo`: restore a generated, degraded video clip (with audio) with the default model and
report how close the result is to the clean original, next to plain bicubic upscaling."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from . import images
from .upscale import UpscaleOptions, upscale

FPS = 15
SAMPLE_RATE = 48000


def make_scene(width: int = 1024, height: int = 768, seed: int = 0) -> np.ndarray:
    """A synthetic RGB scene with gradients, edges, fine lines and text."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([90 + 80 * xx / width, 60 + 120 * yy / height, 160 - 60 * xx / width], axis=2)
    img = img.astype(np.uint8).copy()
    for _ in range(30):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(img, centre, int(rng.integers(10, 90)), colour, -1, cv2.LINE_AA)
    for x in range(40, 400, 8):
        cv2.line(img, (x, 420), (x + 60, 700), (250, 250, 250), 2, cv2.LINE_AA)
    cv2.putText(img, "vsr restores", (380, 560), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (20, 20, 20), 6, cv2.LINE_AA)
    cv2.putText(img, "old footage", (420, 650), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 240), 4, cv2.LINE_AA)
    return img


def degrade(img: np.ndarray, factor: int = 4, rng: np.random.Generator | None = None) -> np.ndarray:
    """Blur, downscale and noise: roughly a low-resolution source (the encoder adds compression)."""
    rng = rng or np.random.default_rng(0)
    h, w = img.shape[:2]
    small = cv2.resize(cv2.GaussianBlur(img, (0, 0), 1.2), (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return np.clip(small + rng.normal(0, 2.5, small.shape), 0, 255).astype(np.uint8)


def make_clip(path: Path, *, frames: int = 30, size: tuple[int, int] = (512, 384)) -> list[np.ndarray]:
    """A camera panning across the scene: H.264 at 1/4 size with an AAC tone; returns the clean frames."""
    scene = make_scene()
    rng = np.random.default_rng(0)
    w, h = size
    truth = [scene[8 + i * 3:8 + i * 3 + h, 16 + i * 8:16 + i * 8 + w].copy() for i in range(frames)]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "20", "preset": "fast"})
        video.width, video.height, video.pix_fmt = w // 4, h // 4, "yuv420p"
        audio = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i, img in enumerate(truth):
            frame = av.VideoFrame.from_ndarray(degrade(img, rng=rng), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        t = np.arange(frames * SAMPLE_RATE // FPS) / SAMPLE_RATE
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="flt",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
            out.mux(audio.encode(chunk))
        out.mux(audio.encode())
    return truth


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def run_demo(outdir: Path, model: str = "esrgan", device: str = "auto") -> int:
    outdir.mkdir(parents=True, exist_ok=True)
    src, dst = outdir / "input.mp4", outdir / "restored.mp4"
    truth = make_clip(src)
    report = upscale(src, dst, UpscaleOptions(model=model, device=device, overwrite=True))
    with av.open(report.outputs[0]) as restored, av.open(str(src)) as original:
        streams = ", ".join(f"{s.type} {s.codec_context.name}" for s in restored.streams)
        ours = [f.to_ndarray(format="rgb24") for f in restored.decode(video=0)]
        lows = [f.to_ndarray(format="rgb24") for f in original.decode(video=0)]
    h, w = truth[0].shape[:2]
    ours_db = np.mean([psnr(o, t) for o, t in zip(ours, truth)])
    bicubic_db = np.mean([psnr(images.resize(lo, w, h), t) for lo, t in zip(lows, truth)])
    print(f"input     {src}: {len(lows)} frames {w // 4}x{h // 4} at {FPS} fps, blurred, noisy, H.264, with audio")
    print(f"restored  {report.outputs[0]}: {len(ours)} frames {w}x{h} ({streams}) with {model} "
          f"in {report.wall_seconds:.1f} s ({report.model_seconds:.1f} s in the network)")
    print(f"PSNR against the clean original: restored {ours_db:.2f} dB, bicubic {bicubic_db:.2f} dB")
    return 0
