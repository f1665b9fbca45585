"""Crash safety: SIGKILL `vsr upscale` at random moments on a 20 s clip with audio, rerun the same
command until it finishes, and compare the result with an uninterrupted run (every decoded frame and
every audio packet). Prints one line per kill and the verdict.

    nice -n 10 python benchmarks/bench_resume_kill.py [--kills 10] [--seconds 20] [--seed 0] [--repair auto]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import media  # noqa: E402
from conftest import tiny  # noqa: E402

from vsr import weights  # noqa: E402
from vsr.video.resume import MANIFEST, work_dir_for  # noqa: E402


def content(path: Path) -> tuple[list, list]:
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray().tobytes()) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = [bytes(p) for p in c.demux(audio=0) if p.size]
    return frames, audio


def segments_done(work: Path) -> int:
    try:
        return len(json.loads((work / MANIFEST).read_text())["segments"])
    except (OSError, ValueError, KeyError):
        return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--segment-frames", type=int, default=25)
    ap.add_argument("--repair", default="off", help="tape repair, as vsr upscale --repair (auto: the stage runs "
                    "with a frame of context on each side)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = media.make_clip(tmp / "tape.mp4", seconds=args.seconds, width=160, height=120)
        model = tmp / "tiny-x2.safetensors"
        weights.save(tiny("compact", nf=8, num_conv=1, upscale=2), model)

        def cmd(out: Path) -> list[str]:
            return [sys.executable, "-m", "vsr", "upscale", str(src), "-o", str(out), "--model", str(model),
                    "--codec", "ffv1", "--segment-frames", str(args.segment_frames), "--quiet",
                    "--deinterlace", "off", "--repair", args.repair]

        ref = tmp / "ref.mkv"
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd(ref))
        startup = None  # imports, probing, detection: until the first segment is recorded
        while proc.poll() is None:
            if startup is None and segments_done(work_dir_for(ref)):
                startup = time.perf_counter() - t0
            time.sleep(0.01)
        full = time.perf_counter() - t0
        assert proc.returncode == 0, "the uninterrupted run failed"
        startup = startup or full / 2
        ref_content = content(ref)
        print(f"clip: {args.seconds:g} s, 160x120 25 fps H.264 + AAC, {len(ref_content[0])} frames; "
              f"uninterrupted run {full:.1f} s (first segment after {startup:.1f} s); segments of {args.segment_frames} frames, ffv1 output")
        out = tmp / "out.mkv"
        work = work_dir_for(out)
        total_segments = -(-len(ref_content[0]) // args.segment_frames)
        kills = runs = 0
        while True:
            runs += 1
            proc = subprocess.Popen(cmd(out), stderr=subprocess.PIPE, text=True)
            if kills < args.kills:
                # a moment anywhere in what is left of the job: startup, a segment, the join, the mux
                left = startup + (full - startup) * (1 - segments_done(work) / total_segments)
                delay = rng.uniform(0.3, left)
                start = time.perf_counter()
                while proc.poll() is None and time.perf_counter() - start < delay:
                    time.sleep(0.01)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                    kills += 1
                    print(f"kill {kills:2d}: SIGKILL after {delay:5.2f} s; {segments_done(work)} segments "
                          f"recorded; final file present: {out.exists()}")
                    continue
            _, err = proc.communicate()
            if proc.returncode != 0:
                print(f"run {runs} failed: {err.strip()}")
                return 1
            if kills >= args.kills:
                break
            print(f"run {runs} finished before its kill moment; starting over to place the remaining kills")
            out.unlink()
        same_frames, same_audio = content(out)[0] == ref_content[0], content(out)[1] == ref_content[1]
        print(f"{kills} kills, {runs} runs; final frames equal the uninterrupted run's: {same_frames}; "
              f"audio bit-identical: {same_audio}; work folder removed: {not work.exists()}")
        return 0 if same_frames and same_audio else 1


if __name__ == "__main__":
    sys.exit(main())
