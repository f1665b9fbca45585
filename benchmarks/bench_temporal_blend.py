"""What carrying the previous output over is worth, before any training: a per-frame model's output
blended with its own previous (blended) output warped onto the frame, ``(1 - a) * y + a * warped``, on the
held-out moving clips pipelines/finetune-esrgan-temporal.yml validates on. The motion comes from the LR
frames, as rrdb-recurrent computes it, so this bounds what its gate can learn with a constant weight;
a = 0 is the per-frame model. PSNR-Y, tOF and warping error as the trainer's validation reports them.

    python benchmarks/bench_temporal_blend.py [--model esrgan] [--alpha 0 0.3 0.5 0.7]   (from the repository root)
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from vsr import metrics, zoo
from vsr.arch.recurrent import lr_flow, upscale_flow, warp
from vsr.engine import Upscaler
from vsr.train.clipdata import validation_clips
from vsr.train.config import load_recipe
from vsr.train.data import load_frames

RECIPE = "pipelines/finetune-esrgan-temporal.yml"


def tensor(frames: np.ndarray) -> torch.Tensor:  # (T, H, W, 3) uint8 -> (T, 3, H, W) in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="esrgan")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7])
    args = ap.parse_args()
    cfg = load_recipe(RECIPE)
    _, held = load_frames(cfg.data, scale=cfg.scale)
    clips = validation_clips(held, cfg=cfg.data, ev=cfg.eval, scale=cfg.scale)
    desc, _ = zoo.resolve(args.model)
    up = Upscaler(desc, device="cpu", precision="auto", tile="auto", backend="torch")
    rows: dict[float, list[tuple[float, float, float]]] = {a: [] for a in args.alpha}
    for _, lq, hq in clips:
        out = tensor(up.upscale_array(lq))
        x = tensor(lq)
        flows = [upscale_flow(lr_flow(x[t:t + 1], x[t - 1:t]), cfg.scale) for t in range(1, len(x))]
        for a in args.alpha:
            blended = [out[:1]]
            for t in range(1, len(out)):
                blended.append((1 - a) * out[t:t + 1] + a * warp(blended[-1], flows[t - 1]))
            o = (torch.cat(blended).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
            rows[a].append((float(np.mean([metrics.psnr(f, t, border=cfg.scale) for f, t in zip(o, hq)])),
                            metrics.tof(list(o), list(hq)), metrics.warping_error(list(o), guide=list(hq))))
    print(f"{args.model} on {len(clips)} held-out moving clips of {len(clips[0][1])} frames ({RECIPE})")
    print("weight of the warped previous output | PSNR-Y dB | tOF | warping error")
    for a, r in rows.items():
        p, t, w = np.nanmean(np.array(r), axis=0)
        print(f"{a:.2f} | {p:.3f} | {t:.4f} | {w:.3e}")
    truth = np.nanmean([metrics.warping_error(list(hq), guide=list(hq)) for _, _, hq in clips])
    print(f"ground truth's own warping error: {truth:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
