"""Line jitter against known offsets: jitter put on every line (vsr.train.tape.line_jitter) of moving pictures
made from real photographs (the pans of bench_repair.py, SD 720x576), and clean real footage for false
detections.

    python benchmarks/bench_jitter.py                  # all parts
    python benchmarks/bench_jitter.py --part injected --clips 4 --radius 3

Prints, per part:
- injected: jitter of RMS 0.5, 1 and 2 px on every frame: |error| of the measured per-line offsets (median,
  90th percentile), PSNR-Y against the clean clip before and after undoing them, and how many clips the
  detector (runs of 2 * radius + 1 frames around three frames of the clip) says have jitter;
- clean: the same detector on the clean pans and on the shared videos (runs spread over each): how often a
  run measures at least the threshold, the mean |offset| measured, and the clip's decision;
- cost: measure_jitter and undo_jitter on one SD frame, one thread (CPU time and wall time).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_repair import DATA, clips, psnr  # noqa: E402  (the same pans, read only)

from vsr.train import tape  # noqa: E402
from vsr.video.frames import rgb_frames  # noqa: E402
from vsr.video.jitter import (JITTER_THRESHOLD, detect_jitter, jitter_amount, luma, measure_jitter,  # noqa: E402
                              undo_jitter)


def around(ys: list[np.ndarray], i: int, r: int) -> list[np.ndarray]:
    return [ys[j] for j in range(i - r, i + r + 1) if j != i and 0 <= j < len(ys)]


def injected_part(clip_list: list[list[np.ndarray]], r: int) -> None:
    rng = np.random.default_rng(11)
    inner = (slice(4, -4), slice(16, -16))  # where a line's ends (edge pixels repeated) do not decide
    for amount in (0.5, 1.0, 2.0):
        errors, before, after, detected, measured, true_abs = [], [], [], 0, [], []
        t0 = time.perf_counter()
        for clip in clip_list:
            hit, truth = zip(*(tape.line_jitter(f, amount, rng) for f in clip))
            ys = [f[..., 0] for f in hit]
            for i in range(r, len(clip) - r):
                got = measure_jitter(ys[i], around(ys, i, r))
                errors.append(np.abs(got - truth[i]))
                true_abs.append(float(np.abs(truth[i]).mean()))
                y_clean = clip[i][..., 0]
                before.append(psnr(tape.yuv(tape.rgb(hit[i]))[..., 0][inner], y_clean[inner]))
                after.append(psnr(tape.yuv(undo_jitter(tape.rgb(hit[i]), got))[..., 0][inner], y_clean[inner]))
            centres = np.linspace(r, len(clip) - 1 - r, 3).round().astype(int)
            found = detect_jitter([ys[c - r:c + r + 1] for c in centres])
            detected += found is not None
            measured.append(found or 0.0)
        e = np.concatenate(errors)
        print(f"jitter RMS {amount} px ({len(errors)} frames): |error| median {np.median(e):.3f} px, 90th "
              f"percentile {np.percentile(e, 90):.3f}; PSNR-Y {statistics.median(before):.2f} -> "
              f"{statistics.median(after):.2f} dB (medians); detected in {detected}/{len(clip_list)} clips, "
              f"measured mean |offset| {statistics.median(measured):.2f} px (median; truly "
              f"{statistics.mean(true_abs):.2f}); "
              f"{time.perf_counter() - t0:.0f} s", flush=True)


def clean_part(clip_list: list[list[np.ndarray]], r: int, runs_per_video: int) -> None:
    sources: dict[str, list[list[np.ndarray]]] = {}
    for p in sorted((DATA / "video").iterdir()):
        count = sum(1 for _ in rgb_frames(p, skip_damaged=True))  # first pass: how many (kept: only the runs)
        starts = np.linspace(0, count - (2 * r + 1), runs_per_video).round().astype(int)
        wanted = {s + k for s in starts for k in range(2 * r + 1)}
        ys = {i: luma(f) for i, f in enumerate(rgb_frames(p, skip_damaged=True)) if i in wanted}
        sources[p.name] = [[ys[s + k] for k in range(2 * r + 1)] for s in starts]
    sources["pans"] = [[f[..., 0] for f in clip[:2 * r + 1]] for clip in clip_list]
    t0 = time.perf_counter()
    for name, runs in sources.items():
        amounts = [jitter_amount([run]) for run in runs]
        over = sum(a >= JITTER_THRESHOLD for a in amounts)
        decision = detect_jitter(runs[::max(1, len(runs) // 8)][:8]) if name != "pans" else None
        print(f"  {name}: {len(runs)} runs of {2 * r + 1} frames: {over} measure >= {JITTER_THRESHOLD} px; mean "
              f"|offset| mean {np.mean(amounts):.3f} px, max {np.max(amounts):.3f}"
              + (f"; the clip (8 runs spread over it): jitter_px {decision}" if name != "pans" else ""), flush=True)
    print(f"clean footage: {time.perf_counter() - t0:.0f} s")


def cost_part(clip_list: list[list[np.ndarray]], r: int, rounds: int = 11) -> None:
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    clip = clip_list[0][:2 * r + 1]
    hit = [tape.line_jitter(f, 1.0, np.random.default_rng(k))[0] for k, f in enumerate(clip)]
    ys, pic = [f[..., 0] for f in hit], tape.rgb(hit[r])
    measure_jitter(ys[r], around(ys, r, r))
    cpu, wall, undo = [], [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        got = measure_jitter(ys[r], around(ys, r, r))
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
        c0 = time.process_time()
        undo_jitter(pic, got)
        undo.append(time.process_time() - c0)
    cv2.setNumThreads(threads)
    print(f"cost per SD frame, one thread, {2 * r} neighbours ({rounds} rounds, median / best): measure_jitter "
          f"CPU {1000 * statistics.median(cpu):.1f} / {1000 * min(cpu):.1f} ms (wall {1000 * statistics.median(wall):.1f}"
          f" / {1000 * min(wall):.1f} ms), undo_jitter CPU {1000 * statistics.median(undo):.1f} / "
          f"{1000 * min(undo):.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["injected", "clean", "cost"], action="append")
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--radius", type=int, default=2, help="neighbouring frames either side")
    ap.add_argument("--video-runs", type=int, default=40, help="runs of frames spread over each shared video")
    args = ap.parse_args()
    if not (DATA / "photos").is_dir():
        print(f"no photographs at {DATA} (set VSR_DATA)", file=sys.stderr)
        return 1
    parts = args.part or ["injected", "clean", "cost"]
    clip_list = clips(args.clips, max(args.frames, 2 * args.radius + 1))
    h, w = clip_list[0][0].shape[:2]
    print(f"{len(clip_list)} pans of {len(clip_list[0])} frames, {w}x{h}; "
          f"radius {args.radius}; threshold {JITTER_THRESHOLD} px", flush=True)
    for part in parts:
        {"injected": lambda: injected_part(clip_list, args.radius),
         "clean": lambda: clean_part(clip_list, args.radius, args.video_runs),
         "cost": lambda: cost_part(clip_list, args.radius)}[part]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
