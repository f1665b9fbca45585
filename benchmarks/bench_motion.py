"""Motion for the recurrent ESRGAN, measured: the previous HR frame warped onto the current one with the
flow each method computes on the LR frames (x4 area downscale), upscaled to HR as the network does it
(vsr.arch.recurrent), and the time per LR frame. Real frames: vtest.avi (static camera, pedestrians)
and tree.avi (a webcam) from ``VSR_DATA`` (default ../shared/data), and the training clips' virtual
camera (vsr.train.clips: sub-pixel pan, zoom and rotation) over three of the photos, halved; "moving"
counts only pixels where the two HR frames differ by more than 8 grey levels, the pixels motion
compensation is for.

    python benchmarks/bench_motion.py [PAIRS]     # 20 pairs per source by default
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from vsr.arch.recurrent import estimate_flow, upscale_flow, warp
from vsr.train import clips

DATA = Path(os.environ.get("VSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
METHODS = ("none", "farneback", "dis-ultrafast", "dis-fast", "dis-medium", "dis")  # "dis": the network's
SCALE = 4


def frame_pairs(path: Path, pairs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to `pairs` pairs of consecutive decodable frames (RGB, cropped to a multiple of the scale),
    spread over the file."""
    frames = []
    with av.open(str(path)) as c:
        for packet in c.demux(video=0):
            try:
                frames += [f.to_ndarray(format="rgb24") for f in packet.decode()]
            except av.error.InvalidDataError:  # tree.avi: a real damaged file
                continue
    step = max(1, (len(frames) - 1) // pairs)
    out = []
    for i in range(0, len(frames) - 1, step)[:pairs]:
        h, w = (s // SCALE * SCALE for s in frames[i].shape[:2])
        out.append((frames[i][:h, :w], frames[i + 1][:h, :w]))
    return out


def camera_pairs(photos: list[Path], pairs: int, size: int = 384) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive frames of the virtual camera of the training clips, a few per photo."""
    rng = np.random.default_rng(0)
    out = []
    per_photo = -(-pairs // len(photos))
    for path in photos:
        img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        for _ in range(per_photo):
            cam = clips.camera_path(img.shape[:2], size=size, frames=2, rng=rng)
            out.append((clips.render(img, cam, 0, size), clips.render(img, cam, 1, size)))
    return out[:pairs]


def lr_grey(rgb: np.ndarray) -> np.ndarray:
    small = cv2.resize(rgb, (rgb.shape[1] // SCALE, rgb.shape[0] // SCALE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


def measure(pairs, method: str) -> tuple[float, float, float, float]:
    """(mean abs error over all HR pixels, over moving ones (0-255), PSNR dB, milliseconds per LR flow)."""
    err_all, err_moving, mse, seconds = [], [], [], 0.0
    for prev, cur in pairs:
        a, b = lr_grey(cur), lr_grey(prev)
        best = float("inf")
        for _ in range(3):  # the fastest of three: the machine may be busy
            start = time.perf_counter()
            flow = estimate_flow(a, b, method)
            best = min(best, time.perf_counter() - start)
        seconds += best
        hr_flow = upscale_flow(torch.from_numpy(flow).permute(2, 0, 1)[None], SCALE)
        prev_t = torch.from_numpy(prev).permute(2, 0, 1)[None].float()
        warped = warp(prev_t, hr_flow)[0].permute(1, 2, 0).numpy()
        diff = np.abs(warped - cur.astype(np.float32))  # (H, W, 3)
        moving = np.abs(cv2.cvtColor(cur, cv2.COLOR_RGB2GRAY).astype(int)
                        - cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY).astype(int)) > 8
        err_all.append(diff.mean())
        err_moving.append(diff[moving].mean() if moving.any() else 0.0)
        mse.append((diff ** 2).mean())
    psnr = 10 * np.log10(255 ** 2 / np.mean(mse))
    return float(np.mean(err_all)), float(np.mean(err_moving)), float(psnr), 1000 * seconds / len(pairs)


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    videos = [DATA / "video" / "vtest.avi", DATA / "video" / "tree.avi"]
    if not all(v.exists() for v in videos):
        print(f"skipped: {videos[0].parent} not found (set VSR_DATA)")
        return
    print(f"previous HR frame warped onto the current one by flow on the x{SCALE} LR frames; "
          "mean abs error (0-255), PSNR; ms per LR flow (one thread)")
    photos = [DATA / "photos" / n for n in ("plasma-Path.jpg", "lxqt-flowers.png", "plasma-FallenLeaf.jpg")]
    sources = [(v.name, frame_pairs(v, pairs)) for v in videos]
    if all(p.exists() for p in photos):
        sources.append(("virtual camera over photos", camera_pairs(photos, pairs)))
    for name, pairs_ in sources:
        h, w = pairs_[0][0].shape[:2]
        print(f"\n{name}: {len(pairs_)} pairs, HR {w}x{h}, LR {w // SCALE}x{h // SCALE}")
        print(f"{'method':15s} {'err all':>8s} {'err moving':>10s} {'PSNR':>7s} {'ms/frame':>9s}")
        for method in METHODS:
            e_all, e_mov, psnr, ms = measure(pairs_, method)
            print(f"{method:15s} {e_all:8.2f} {e_mov:10.2f} {psnr:7.2f} {ms:9.2f}")
    # what a restoration pays: an SD capture (vtest's 768x576 frames) is the network's LR input itself
    sd = [(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)) for a, b in sources[0][1][:5]]
    print("\nms per flow on a 768x576 LR frame (one thread): "
          + ", ".join(f"{m} {1000 * sd_seconds(sd, m):.0f}" for m in METHODS[1:]))


def sd_seconds(pairs, method: str) -> float:
    times = []
    for a, b in pairs:
        start = time.perf_counter()
        estimate_flow(b, a, method)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


if __name__ == "__main__":
    main()
