"""Steps of the analog capture chain that `degrade.py` draws from: the capture card's codec (real
encoders through PyAV, in memory), correlated tape noise, dropouts, and interlacing undone by a
deinterlacer. Each is a plain function of an image and its parameters; randomness comes in as an
explicit generator.
"""
from __future__ import annotations

import io

import av
import cv2
import numpy as np

# codec -> (PyAV encoder, pixel format, frame size the format requires or None)
CODECS = {
    "h264": ("libx264", "yuv420p", None),
    "mpeg2": ("mpeg2video", "yuv420p", None),
    "mjpeg": ("mjpeg", "yuvj422p", None),
    "dv": ("dvvideo", "yuv411p", (720, 480)),  # NTSC DV: 4:1:1 chroma at 25 Mbit/s, fixed size
}


def codec_roundtrip(frames: list[np.ndarray], codec: str, quality: float) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB frames of one clip through a real encoder and back, in memory.

    quality: 0 (worst) .. 1 (best); mapped to x264's CRF (38 .. 16) or MPEG-2/MJPEG's fixed quantiser
    (20 .. 2); DV has a fixed bit rate. Frames are reflect-padded to what the format needs (even sizes;
    DV's 720x480) and cropped back.
    """
    encoder, pix_fmt, fixed = CODECS[codec]
    h, w = frames[0].shape[:2]
    width, height = fixed or (w + w % 2, h + h % 2)
    opts: dict[str, str] = {}
    if codec == "h264":
        opts = {"crf": f"{38 - 22 * quality:.1f}", "preset": "veryfast"}
    elif codec in ("mpeg2", "mjpeg"):
        q = str(int(round(20 - 18 * quality)))
        opts = {"qmin": q, "qmax": q}
    buf = io.BytesIO()
    with av.open(buf, "w", format="nut") as c:
        s = c.add_stream(encoder, rate=30)
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        s.codec_context.options = opts
        for f in frames:
            canvas = _pad_to(f, height, width)
            for p in s.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        out = [f.to_ndarray(format="rgb24")[:h, :w] for f in c.decode(video=0)]
    assert len(out) == len(frames), (codec, len(out), len(frames))
    return [np.ascontiguousarray(o) for o in out]


def _pad_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad (repeatedly, for small images) to height x width."""
    while img.shape[0] < height or img.shape[1] < width:
        ph, pw = min(height - img.shape[0], img.shape[0] - 1), min(width - img.shape[1], img.shape[1] - 1)
        img = cv2.copyMakeBorder(img, 0, max(ph, 0), 0, max(pw, 0), cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(img[:height, :width])


def tape_noise(shape: tuple[int, int], *, strength: float, streak: float, banding: float,
               rng: np.random.Generator) -> np.ndarray:
    """Luma noise as tape makes it, (h, w) float32: grain smeared along the line (horizontal Gaussian,
    sigma `streak` pixels, normalised to std `strength`) plus a per-line offset (std `banding`)."""
    h, w = shape
    n = rng.standard_normal((h, w), dtype=np.float32)
    if streak > 0:
        n = cv2.GaussianBlur(n, (0, 0), sigmaX=streak, sigmaY=0.01, borderType=cv2.BORDER_REFLECT)
        n /= max(float(n.std()), 1e-6)
    return n * strength + rng.standard_normal((h, 1), dtype=np.float32) * banding


def dropouts(y: np.ndarray, *, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Short horizontal streaks where the tape lost its oxide: white noise, or the line above (what a
    dropout compensator puts there). rate: expected streaks per 10,000 pixels."""
    h, w = y.shape
    out = y.copy()
    for _ in range(rng.poisson(rate * h * w / 1e4)):
        r, x0 = int(rng.integers(h)), int(rng.integers(w))
        length = int(rng.integers(3, max(4, w // 4)))
        seg = slice(x0, min(w, x0 + length))
        if r > 0 and rng.random() < 0.5:
            out[r, seg] = out[r - 1, seg]
        else:
            out[r, seg] = 0.85 + 0.15 * rng.random(out[r, seg].shape, dtype=np.float32)
    return out


def interlace(img: np.ndarray, *, mode: str, motion: float, field: int) -> np.ndarray:
    """Two fields of a moving picture woven into a frame and undone as a capture chain would: "double"
    keeps one field and interpolates the other (line doubling), "blend" averages neighbouring lines
    (a blending deinterlacer: ghosts of the motion), "weave" leaves the combing in. `motion`: how far
    the picture moved between the fields, in pixels (horizontally). (h, w, c) float32."""
    h, w = img.shape[:2]
    if h < 4:
        return img
    woven = img.copy()
    if motion:  # the other field, a moment later
        m = np.float32([[1, 0, motion], [0, 1, 0]])
        moved = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        woven[1 - field::2] = moved[1 - field::2]
    if mode == "weave":
        return woven
    up, down = np.concatenate([woven[1:2], woven[:-1]]), np.concatenate([woven[1:], woven[-2:-1]])
    if mode == "blend":
        return 0.25 * up + 0.5 * woven + 0.25 * down
    out = woven.copy()  # line doubling: the other field's lines from the kept field's
    out[1 - field::2] = (0.5 * (up + down))[1 - field::2]
    return out
