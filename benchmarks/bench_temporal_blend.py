"""Temporal consistency on the held-out moving clips pipelines/finetune-esrgan-temporal.yml validates on:
a per-frame model, that model's output blended with its own previous (blended) output warped onto the
frame, ``(1 - a) * y + a * warped``, and frame-recurrent models, all in one run. The motion of the blend
comes from the LR frames, as rrdb-recurrent computes it, so it shows what carrying the previous output
over is worth before any training (a = 0 is the per-frame model). Every model runs through the engine
as ``vsr upscale`` runs it (a recurrent one frame after frame from the first); PSNR-Y, tOF and warping
error as the trainer's validation reports them, with the change against the per-frame model.

    python benchmarks/bench_temporal_blend.py [--model esrgan] [--alpha 0.3 0.5] [--recurrent esrgan-temporal]
        [--precision fp32]   (from the repository root)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsr import metrics, zoo  # noqa: E402
from vsr.arch.recurrent import lr_flow, upscale_flow, warp  # noqa: E402
from vsr.train.clipdata import validation_clips  # noqa: E402
from vsr.train.config import load_recipe  # noqa: E402
from vsr.train.data import load_frames  # noqa: E402
from vsr.train.evaluate import clip_scores, validate_clips  # noqa: E402

RECIPE = ROOT / "pipelines/finetune-esrgan-temporal.yml"


def tensor(frames: np.ndarray) -> torch.Tensor:  # (T, H, W, 3) uint8 -> (T, 3, H, W) in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="esrgan", help="the per-frame model")
    ap.add_argument("--alpha", type=float, nargs="*", default=[0.3, 0.5, 0.7])
    ap.add_argument("--recurrent", nargs="*", default=[], help="frame-recurrent models (names or weight files)")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    cfg = load_recipe(RECIPE)
    _, held = load_frames(cfg.data, scale=cfg.scale)
    clips = validation_clips(held, cfg=cfg.data, ev=cfg.eval, scale=cfg.scale)

    def run(name: str) -> list[np.ndarray]:
        desc, _ = zoo.resolve(name)
        return validate_clips(desc, clips, device=torch.device("cpu"), scale=cfg.scale, precision=args.precision)[1]

    per_frame = run(args.model)
    rows = {f"{args.model}, per frame": clip_scores(per_frame, clips, scale=cfg.scale)}
    for a in args.alpha:
        outs = []
        for (_, lq, _), out in zip(clips, per_frame):
            x, y = tensor(lq), tensor(out)
            blended = [y[:1]]
            for t in range(1, len(y)):
                flow = upscale_flow(lr_flow(x[t:t + 1], x[t - 1:t]), cfg.scale)
                blended.append((1 - a) * y[t:t + 1] + a * warp(blended[-1], flow))
            outs.append((torch.cat(blended).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8))
        rows[f"{args.model} blended at {a:.2f}"] = clip_scores(outs, clips, scale=cfg.scale)
    for name in args.recurrent:
        rows[name] = clip_scores(run(name), clips, scale=cfg.scale)
    print(f"{len(clips)} held-out moving clips of {len(clips[0][1])} frames ({RECIPE.relative_to(ROOT)}), "
          f"precision {args.precision}")
    print("| model | PSNR-Y dB | tOF | warping error |\n|---|---|---|---|")
    base = next(iter(rows.values()))
    p0, t0, w0 = base["psnr_y"], base["tof"], base["warping_error"]
    for name, m in rows.items():
        p, t, w = m["psnr_y"], m["tof"], m["warping_error"]
        print(f"| {name} | {p:.3f} ({p - p0:+.2f}) | {t:.4f} ({t / t0 - 1:+.1%}) | {w:.3e} ({w / w0 - 1:+.1%}) |")
    truth = np.nanmean([metrics.warping_error(list(hq), guide=list(hq)) for _, _, hq in clips])
    print(f"ground truth's own warping error: {truth:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
