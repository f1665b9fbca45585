"""Generated analog-looking media: woven interlaced video, VHS-style borders and head switching, DVD
geometry. Small and deterministic, for tests and benchmarks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsr.video.ffmpeg import run_ffmpeg

BT601 = "color_primaries=smpte170m:color_trc=smpte170m:colorspace=smpte170m:range=tv"


def make_interlaced(path: Path, *, width: int = 128, height: int = 96, frames: int = 30, rate: int = 25,
                    audio: bool = True) -> Path:
    """Interlaced video made the way cameras make it: a moving picture sampled at field rate (2 x rate,
    scrolling sideways so every vertical edge moves), fields woven in pairs, top field first. FLAC audio."""
    src = (f"testsrc=size={width}x{height}:rate={2 * rate},scroll=horizontal=0.01,"
           f"trim=end_frame={2 * frames},format=yuv420p")
    args = ["-f", "lavfi", "-i", src]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={frames / rate}", "-c:a", "flac"]
    args += ["-vf", f"tinterlace=interleave_top,setfield=tff,setparams={BT601}", "-c:v", "ffv1", str(path)]
    run_ffmpeg(args, what="making an interlaced clip")
    return path


def make_progressive_twin(path: Path, *, width: int = 128, height: int = 96, frames: int = 60, rate: int = 50) -> Path:
    """The same moving picture as make_interlaced, progressive at field rate: the combing baseline."""
    src = (f"testsrc=size={width}x{height}:rate={rate},scroll=horizontal=0.01,trim=end_frame={frames},"
           "format=yuv420p")
    run_ffmpeg(["-f", "lavfi", "-i", src, "-c:v", "ffv1", str(path)], what="making a progressive clip")
    return path


def make_vhs_capture(path: Path, *, width: int = 176, height: int = 144, frames: int = 12, border: int = 8,
                     band: int = 6, seed: int = 0) -> Path:
    """A capture with black bars left and right (`border` pixels), a thin black line at the top and a
    head-switching band of `band` torn, noisy lines at the bottom."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.zeros((height, width, 3), np.float32)
            img[..., 0] = 128 + 90 * np.sin((xx + 3 * i) / 9.0)
            img[..., 1] = 128 + 90 * np.cos((yy + xx / 2) / 11.0)
            img[..., 2] = 100 + 60 * np.sin((yy - 2 * i) / 7.0)
            tear = img[height - band:].copy()
            for r in range(band):  # each line shifted sideways by a different amount, plus noise
                tear[r] = np.roll(tear[r], int(rng.integers(8, 30)), axis=0) + rng.normal(0, 40, tear[r].shape)
            img[height - band:] = tear
            img[:, :border] = 0
            img[:, width - border:] = 0
            img[:2] = 0
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for p in s.encode(frame.reformat(format="yuv420p")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def make_sd(path: Path, *, width: int = 720, height: int = 480, sar: str = "8/9", frames: int = 2,
            colour: tuple[int, int, int] | None = None) -> Path:
    """SD video with a given pixel aspect (SAR) and BT.601 tags; a flat RGB colour when `colour` is given."""
    src = (f"color=c=0x{colour[0]:02x}{colour[1]:02x}{colour[2]:02x}:" if colour else "testsrc2=")
    src += f"size={width}x{height}:rate=25,trim=end_frame={frames},setsar={sar}"
    run_ffmpeg(["-f", "lavfi", "-i", src, "-vf", f"scale=out_color_matrix=bt601:out_range=tv,format=yuv420p,"
                f"setparams={BT601}", "-c:v", "ffv1", str(path)], what="making an SD clip")
    return path


def display_aspect(path: Path) -> Fraction:
    """Width / height as shown: coded size times the sample aspect ratio."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        sar = s.sample_aspect_ratio or s.codec_context.sample_aspect_ratio or Fraction(1)
        return Fraction(s.codec_context.width) * Fraction(sar) / s.codec_context.height
