"""Seconds per training step of the trainer: precision x gradient checkpointing, on generated data.

    python benchmarks/bench_train.py                       # RRDB nf 64, 4 blocks, LR patch 32, batch 4
    python benchmarks/bench_train.py --nb 23 --steps 6     # the full ESRGAN trunk

Prints numbers only (never pass/fail). The first steps of each shape are slow on CPUs (oneDNN
builds its kernels) and are left out.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsr.train.config import from_dict  # noqa: E402
from vsr.train.loop import train  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nb", type=int, default=4)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames"
        frames.mkdir()
        rng = np.random.default_rng(0)
        for i in range(2):
            img = cv2.resize((rng.random((64, 64, 3)) * 255).astype(np.uint8), (512, 512))
            cv2.imwrite(str(frames / f"{i}.png"), img)
        print(f"RRDB nf 64 nb {args.nb}, LR patch {args.patch}, batch {args.batch}, "
              f"{torch.get_num_threads()} threads; mean of steps {args.warmup + 1}..{args.steps}")
        for precision in args.precisions.split(","):
            for ckpt in (False, True):
                cfg = from_dict({
                    "name": "bench", "total_steps": args.steps, "precision": precision, "device": "cpu",
                    "output": f"{tmp}/run-{precision}-{ckpt}",
                    "networks": {"generator": {"arch": "rrdb", "params": {"nb": args.nb}, "checkpointing": ckpt}},
                    "data": {"frames": str(frames), "patch": args.patch, "batch": args.batch},
                    "steps": [{"network": "generator", "losses": ["pixel"]}],
                    "losses": {"pixel": {"type": "l1"}},
                    "eval": {"every": 0}, "log": {"tensorboard": False, "checkpoint_minutes": 0},
                })
                t = time.perf_counter()
                run = train(cfg, progress=False)
                secs = [b["seconds"] - a["seconds"] for a, b in zip(run.losses, run.losses[1:])][args.warmup:]
                print(f"{precision:5} checkpointing={str(ckpt):5}  {np.mean(secs):6.3f} s/step  "
                      f"(run {time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
