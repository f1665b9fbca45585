"""Tape repair against known defects: defects put at known places (vsr.train.tape) on moving pictures made
from real photographs (a camera panning across each, SD 720x576), and clean real footage for false repairs.

    python benchmarks/bench_repair.py                 # all parts (about 20 min on 2 cores)
    python benchmarks/bench_repair.py --part dropouts --clips 4

Prints, per part:
- chroma delay: every injected offset from -3 to +3 px in quarter steps (and a vertical one of -1..1 line),
  each on two of the clips: the error of the measured value against the injected one plus the clean clip's
  own (its photograph's chroma siting), and the chroma planes' PSNR against the clean clip before and after;
- dropouts: clips with 0.1, 0.3 and 1 streaks per frame: streaks found and filled (of those standing out by
  the stage's 40 levels, and of all), PSNR-Y inside the streaks before and after;
- false fills: streaks filled on clean footage (the shared videos, and the clean pan clips), per 1000 frames;
- chroma noise: VHS-like chroma noise (new on each line, smeared along it) of std 3 and 5 levels: found,
  chroma PSNR against the clean clip before and after, luma's largest change; the level measured on clean
  footage (the shared videos, the pans), which must stay under the stage's threshold;
- head-switching: bands of 6-10 lines torn by 8-32 px: lines found, PSNR-Y of the bottom 16 lines before and after;
- memory (only with --part memory): `vsr repair --repair dropouts,chroma-noise` over a 10-minute clip (320x240, testsrc2):
  the process's resident memory sampled every 5 s, early, halfway and at the end;
- cost: the repair of one SD frame (every repair but the chroma delay), next to `compact` (x2) on it;
- end to end: `vsr upscale --preset vhs` with and without repair on a clip with every defect, scored by
  `vsr compare` against the clean clip (PSNR-Y, SSIM-Y, tOF, warping error); --picture keeps its picture.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from vsr.images import read_image
from vsr.train import tape
from vsr.video.frames import rgb_frames
from vsr.video.mend import (_shift, fill_dropouts, find_dropouts, head_switching_band, measure_chroma_delay,
                            repair_head_switching)
from vsr.video.mend import chroma_noise_level
from vsr.video.repair import CHROMA_NOISE, RepairOptions, RepairPlan, plan_repair, repair_frame

DATA = Path(os.environ.get("VSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
W, H = 720, 576


def clips(count: int, frames: int) -> list[list[np.ndarray]]:
    """``count`` pans of ``frames`` frames (Y, U, V planes) over the first photographs (halved where they are
    large enough: they are JPEGs)."""
    photos = sorted(p for p in (DATA / "photos").iterdir() if p.suffix in (".jpg", ".png"))[:count]
    rng = np.random.default_rng(0)
    out = []
    for p in photos:
        img = read_image(p)
        img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        need = max((H + 80 + 3 * frames) / img.shape[0], (W + 80 + 3 * frames) / img.shape[1])
        f = min(1.0, max(0.5, need))  # halved where the photograph is large enough for the pan
        img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
        vx, vy = rng.uniform(-3, 3, 2)
        x0 = rng.uniform(40 + max(0.0, -vx * frames), img.shape[1] - W - 40 - max(0.0, vx * frames))
        y0 = rng.uniform(40 + max(0.0, -vy * frames), img.shape[0] - H - 40 - max(0.0, vy * frames))
        out.append([tape.yuv(cv2.warpAffine(img, np.float32([[1, 0, x0 + vx * i], [0, 1, y0 + vy * i]]), (W, H),
                                            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)) for i in range(frames)])
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / max(1e-6, float(np.mean((a.astype(np.float64) - b) ** 2)))))


def chroma_part(clip_list: list[list[np.ndarray]]) -> None:
    """As vsr decides: measured on six frames (their odd and even halves apart), applied when both halves
    agree; each offset counted as right (within 0.25 px of the injected one plus the clean clip's own),
    left alone, or wrong."""
    offsets = np.arange(-3.0, 3.0 + 1e-6, 0.25)
    right = declined = wrong = 0
    errors, before, after = [], [], []
    t0 = time.perf_counter()
    for k, clip in enumerate(clip_list):
        sample = [np.round(f) for f in clip[:6]]
        base = measure_chroma_delay(sample) or (0.0, 0.0)  # not measurable: taken as in place
        tally = [0, 0, 0]
        for j, dx in enumerate(offsets):
            if (j + k) % len(clip_list) not in (0, len(clip_list) // 2):  # each offset on two clips
                continue
            dy = float([-1.0, -0.5, 0.0, 0.5, 1.0][(j + k) // 5 % 5])
            hit = [np.round(tape.chroma_delay(f, dx, dy)) for f in sample]
            plan = plan_repair(RepairOptions(mode="chroma-delay"), hit)
            if plan.chroma_delay is None:
                declined += 1
                tally[1] += 1
                continue
            got = plan.chroma_delay
            err = max(abs(got[0] - base[0] - dx), abs(got[1] - base[1] - dy))
            errors.append(err)
            right += err <= 0.25
            wrong += err > 0.25
            tally[0 if err <= 0.25 else 2] += 1
            if err > 0.25:
                print(f"    injected {dx:+.2f}, {dy:+.2f}: {plan.notes[0]}")
            inner = (slice(8, -8), slice(8, -8))
            fixed = np.stack([_shift(hit[0][..., ch], -(got[0] - base[0]), -(got[1] - base[1])) for ch in (1, 2)], -1)
            before.append(psnr(hit[0][inner][..., 1:], sample[0][inner][..., 1:]))
            after.append(psnr(fixed[inner], sample[0][inner][..., 1:]))
        print(f"  clip {k}: own chroma offset {base[0]:+.2f}, {base[1]:+.2f} px; found, left alone, wrong: {tally}",
              flush=True)
    n = right + declined + wrong
    e = np.array(errors or [0.0])
    print(f"chroma delay: {n} injected offsets: {right} found within 0.25 px ({100 * right / n:.1f}%), {declined} "
          f"left alone (not measurable), {wrong} applied off by more; |error| of the applied: median "
          f"{np.median(e):.3f} px, max {e.max():.3f}")
    print(f"  chroma PSNR vs clean (applied): before {statistics.median(before or [0]):.2f} dB, after "
          f"{statistics.median(after or [0]):.2f} dB (medians); {time.perf_counter() - t0:.0f} s")


def dropout_part(clip_list: list[list[np.ndarray]]) -> None:
    rng = np.random.default_rng(1)
    for rate in (0.1, 0.3, 1.0):
        shown = found = total = hits = 0
        inside_before, inside_after = [], []
        t0 = time.perf_counter()
        for clip in clip_list:
            hit, masks = [], []
            for f in clip:
                h, m = f, np.zeros(f.shape[:2], bool)
                streaks = []
                for _ in range(rng.poisson(rate)):
                    h, one = tape.dropouts(h, 1, rng)
                    streaks.append(one)
                    m |= one
                hit.append(h)
                masks.append(streaks)
            pictures = [tape.rgb(f) for f in hit]
            for i, pic in enumerate(pictures):
                nb = [pictures[j] for j in (i - 1, i + 1) if 0 <= j < len(pictures)]
                mask, aligned = find_dropouts(pic, nb)
                fixed, n = fill_dropouts(pic, mask, aligned) if mask.any() else (pic, 0)
                hits += n
                y_fixed, y_clean, y_hit = tape.yuv(fixed)[..., 0], clip[i][..., 0], hit[i][..., 0]
                for s in masks[i]:
                    total += 1
                    standout = np.abs(y_hit[s] - y_clean[s]).mean() >= 40
                    covered = mask[s].mean() >= 0.8
                    shown += standout
                    found += covered and standout
                    if standout:
                        inside_before.append(psnr(y_hit[s], y_clean[s]))
                        inside_after.append(psnr(y_fixed[s], y_clean[s]))
        print(f"dropouts, {rate} per frame: {total} streaks, {shown} stand out by 40 levels; found and filled "
              f"{found} of those ({100 * found / max(1, shown):.1f}%); {hits} fills in all; PSNR-Y inside them "
              f"{statistics.median(inside_before or [0]):.1f} -> {statistics.median(inside_after or [0]):.1f} dB "
              f"(medians); {time.perf_counter() - t0:.0f} s", flush=True)


def false_fill_part(clip_list: list[list[np.ndarray]], max_video_frames: int) -> None:
    sources = {p.name: list(rgb_frames(p, skip_damaged=True))[:max_video_frames]
               for p in sorted((DATA / "video").iterdir())}
    sources["pans"] = [tape.rgb(f) for clip in clip_list for f in clip]
    t0 = time.perf_counter()
    frames = fills = 0
    for name, pics in sources.items():
        n_fills = 0
        for i, pic in enumerate(pics):
            nb = [pics[j] for j in (i - 1, i + 1) if 0 <= j < len(pics)]
            mask, _ = find_dropouts(pic, nb)
            if mask.any():
                n_fills += int(cv2.connectedComponents(mask.astype(np.uint8))[0] - 1)
        print(f"  {name}: {len(pics)} clean frames, {n_fills} streaks filled", flush=True)
        frames, fills = frames + len(pics), fills + n_fills
    print(f"false fills: {fills} in {frames} clean frames = {1000 * fills / frames:.2f} per 1000 frames; "
          f"{time.perf_counter() - t0:.0f} s")


def chroma_noise_part(clip_list: list[list[np.ndarray]]) -> None:
    rng = np.random.default_rng(4)
    plan = RepairPlan(chroma_noise=True)
    t0 = time.perf_counter()
    for sigma in (3.0, 5.0):
        found, before, after, luma_change = 0, [], [], 0.0
        for clip in clip_list:
            noisy = [np.round(tape.chroma_noise(f, sigma, rng)) for f in clip[:5]]
            found += plan_repair(RepairOptions("chroma-noise"), noisy).chroma_noise
            pictures = [tape.rgb(f) for f in noisy]
            fixed = tape.yuv(repair_frame(plan, pictures[2], pictures[:2] + pictures[3:], 2)[0])
            seen = tape.yuv(pictures[2])
            before.append(psnr(seen[..., 1:], clip[2][..., 1:]))
            after.append(psnr(fixed[..., 1:], clip[2][..., 1:]))
            luma_change = max(luma_change, float(np.abs(fixed[..., 0] - seen[..., 0]).max()))
        print(f"chroma noise of {sigma:g} levels: found on {found} of {len(clip_list)} clips; chroma PSNR "
              f"{statistics.median(before):.2f} -> {statistics.median(after):.2f} dB (medians); luma changed by at "
              f"most {luma_change:g} level(s)", flush=True)
    levels = {p.name: chroma_noise_level([tape.yuv(f) for f in list(rgb_frames(p, skip_damaged=True))[:300:50]])
              for p in sorted((DATA / "video").iterdir())}
    levels["pans (highest)"] = max(chroma_noise_level(clip[:6]) for clip in clip_list)
    print(f"  clean footage, chroma noise level (threshold {CHROMA_NOISE:g}): "
          + ", ".join(f"{k} {v:.2f}" for k, v in levels.items()) + f"; {time.perf_counter() - t0:.0f} s")


def head_part(clip_list: list[list[np.ndarray]]) -> None:
    rng = np.random.default_rng(2)
    rows_found, before, after = [], [], []
    for k, clip in enumerate(clip_list):
        rows, skew = 6 + k % 5, 8 + 6 * (k % 5)
        torn = [tape.head_switching(f, rows, skew, rng) for f in clip[:4]]
        band = head_switching_band([f[..., 0] for f in torn])
        rows_found.append((rows, band))
        for c, t in zip(clip, torn):
            before.append(psnr(t[-16:, :, 0], c[-16:, :, 0]))
            after.append(psnr(tape.yuv(repair_head_switching(tape.rgb(t), band))[-16:, :, 0], c[-16:, :, 0]))
    clean = [head_switching_band([f[..., 0] for f in clip[:4]]) for clip in clip_list]
    print(f"head-switching: lines (injected, found) {rows_found}; on the clean clips {clean}")
    print(f"  PSNR-Y of the bottom 16 lines: before {statistics.median(before):.2f} dB, after "
          f"{statistics.median(after):.2f} dB (medians over {len(before)} frames)")


def cost_part(clip_list: list[list[np.ndarray]], rounds: int = 5) -> None:
    import torch

    from vsr import zoo
    from vsr.engine import Upscaler

    clip = [tape.rgb(f) for f in clip_list[0][:5]]
    plan = RepairPlan(dropouts=True, head_switching=8, chroma_noise=True, jitter=1.0)
    desc, _ = zoo.resolve("compact", 2)
    engine = Upscaler(desc, device="cpu", precision="fp32", backend="torch", tile=0)
    engine.upscale_array(clip[1][None])  # warm-up
    repair_s, model_s = [], []
    for _ in range(rounds):  # interleaved: the machine's load falls on both alike
        t0 = time.perf_counter()
        repair_frame(plan, clip[2], clip[:2] + clip[3:], 2)
        repair_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.upscale_array(clip[2][None])
        model_s.append(time.perf_counter() - t0)
    print(f"cost per SD frame ({torch.get_num_threads()} threads, medians of {rounds}): repair (every repair: "
          f"jitter, dropouts, chroma noise, band) {statistics.median(repair_s):.3f} s; compact x2 fp32 {statistics.median(model_s):.3f} s; "
          f"ratio {statistics.median(repair_s) / statistics.median(model_s):.2f}")


def memory_part(minutes: float = 10.0) -> None:
    """Resident memory of `vsr repair` over a long clip: flat when the stage keeps only the frames around the
    one it repairs."""
    import subprocess
    import tempfile

    from vsr.video.ffmpeg import ffmpeg_exe

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "long.mkv", Path(tmp) / "mended.mkv"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc2=size=320x240:rate=25:duration={minutes * 60:g},noise=alls=12:allf=t",
                        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", str(src)], check=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "vsr", "repair", str(src), "-o", str(out), "--repair",
                                 "dropouts,chroma-noise", "--codec", "ffv1", "--quiet"])
        samples = []
        while proc.poll() is None:
            try:
                rss = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                           if line.startswith("VmRSS:"))
                samples.append((time.perf_counter() - t0, rss / 1024))
            except (OSError, StopIteration):
                pass
            time.sleep(5)
        if proc.returncode or not samples:
            raise SystemExit(f"vsr repair failed ({proc.returncode})")
    n = len(samples)
    picks = [samples[min(n - 1, max(0, round(f * (n - 1))))] for f in (0.1, 0.5, 1.0)]
    print(f"memory, vsr repair over {minutes:g} min of 320x240 ({time.perf_counter() - t0:.0f} s): resident "
          + ", ".join(f"{m:.0f} MiB at {t:.0f} s" for t, m in picks) + f"; highest {max(m for _, m in samples):.0f} MiB")


def e2e_part(picture: Path | None) -> None:
    """`vsr upscale tape.mkv --preset vhs` against the same with --repair off, on a clip with every defect,
    scored by `vsr compare` against the clean clip at the output size (--crop off for both: without repair
    the preset would crop the band, and the two would differ in size)."""
    import json
    import shutil
    import subprocess
    import tempfile

    photo = read_image(sorted((DATA / "photos").glob("plasma-ColorfulCups.jpg"))[0])[..., :3]
    rng = np.random.default_rng(3)
    big = [cv2.warpAffine(photo, np.float32([[1, 0, 600 + 6 * i], [0, 1, 400 + 2 * i]]), (960, 720),
                          flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP) for i in range(10)]
    small = [tape.yuv(cv2.resize(f, (240, 180), interpolation=cv2.INTER_AREA)) for f in big]
    hit = [tape.head_switching(tape.chroma_noise(tape.line_jitter(tape.dropouts(tape.chroma_delay(f, 1.5, 0.0), 1,
                                                                                 rng)[0], 0.5, rng)[0], 3.0, rng),
                               5, 8, rng) for f in small]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tape.write(d / "clean.mkv", [tape.yuv(f) for f in big])
        tape.write(d / "tape.mkv", hit)
        t0 = time.perf_counter()
        for name, extra in (("repaired", []), ("unrepaired", ["--repair", "off"])):
            r = subprocess.run([sys.executable, "-m", "vsr", "upscale", str(d / "tape.mkv"), "-o", str(d / f"{name}.mkv"),
                                "--preset", "vhs", "--model", "compact", "--codec", "ffv1", "--crop", "off", "--json",
                                *extra],
                               capture_output=True, text=True, check=True)
            report = json.loads(r.stdout)
            print(f"  --preset vhs{' ' + ' '.join(extra) if extra else ''}: repairs {report.get('repairs')}")
        r = subprocess.run([sys.executable, "-m", "vsr", "compare", str(d / "repaired.mkv"), str(d / "unrepaired.mkv"),
                            "--reference", str(d / "clean.mkv"), "-o", str(d / "cmp"), "--json"],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"vsr compare failed: {r.stderr.strip()}")
        summary = json.loads(r.stdout)
        print(f"end to end (compact x4, 240x180 -> 960x720, 10 frames; {time.perf_counter() - t0:.0f} s), means "
              "against the clean clip:")
        for key, name in (("A", "repaired"), ("B", "--repair off")):
            m = summary["clips"][key]
            print(f"  {name:13s} PSNR-Y {m['psnr_y']['mean']:.2f} dB  SSIM-Y {m['ssim_y']['mean']:.4f}  "
                  f"tOF {m['tof']['mean']:.3f}  warping error {m['warping_error']['mean']:.6f}")
        if picture:
            shutil.copy(d / "cmp" / "side_by_side.png", picture)
            print(f"  picture: {picture}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["chroma", "dropouts", "false-fills", "chroma-noise", "head", "memory", "cost",
                                                  "e2e"], action="append")
    ap.add_argument("--picture", type=Path, help="e2e: keep vsr compare's side-by-side picture here")
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--video-frames", type=int, default=1000, help="clean frames of each shared video at most")
    args = ap.parse_args()
    if not (DATA / "photos").is_dir():
        print(f"no photographs at {DATA} (set VSR_DATA)", file=sys.stderr)
        return 1
    parts = args.part or ["chroma", "dropouts", "false-fills", "chroma-noise", "head", "cost", "e2e"]
    clip_list = clips(args.clips, args.frames)
    print(f"{len(clip_list)} pans of {args.frames} frames, {W}x{H}", flush=True)
    for part in parts:
        {"chroma": lambda: chroma_part(clip_list), "dropouts": lambda: dropout_part(clip_list),
         "false-fills": lambda: false_fill_part(clip_list, args.video_frames),
         "chroma-noise": lambda: chroma_noise_part(clip_list), "head": lambda: head_part(clip_list),
         "memory": memory_part, "cost": lambda: cost_part(clip_list), "e2e": lambda: e2e_part(args.picture)}[part]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
