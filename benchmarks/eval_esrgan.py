"""Quality on held-out photos degraded by the VHS model, x4: PSNR-Y / SSIM-Y of bicubic,
realesrgan-x4plus and our models, plus the PSNR-Y against training-time curve of a run.

    python benchmarks/eval_esrgan.py                                  # bicubic, realesrgan-x4plus, esrgan
    python benchmarks/eval_esrgan.py --model esrgan --model /tmp/x.safetensors
    python benchmarks/eval_esrgan.py --run /tmp/vsr-runs/vhs-esrgan   # also the curve of that run

The held-out set is the recipe's (``data.holdout``, centre crops, fixed degradation draw), the same
images the trainer validates on; photos come from ``VSR_DATA`` or ../shared/data.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsr import metrics, zoo  # noqa: E402
from vsr.train.checkpoint import load as load_checkpoint  # noqa: E402
from vsr.train.config import load_recipe  # noqa: E402
from vsr.train.data import load_frames, validation_set  # noqa: E402
from vsr.engine import Upscaler  # noqa: E402
from vsr.train.evaluate import bicubic  # noqa: E402


def data_dir() -> Path:
    return Path(os.environ.get("VSR_DATA") or ROOT.parent / "shared" / "data")


def load_model(spec: str):
    """A model name, a weights file, or a training run's checkpoint (its EMA generator): a descriptor."""
    path = Path(spec)
    if path.suffix == ".pt" or path.is_dir():
        state = load_checkpoint(path)
        from vsr import weights

        sd = state["ema"].get("generator") or state["networks"]["generator"]
        # the constructor arguments the tensors do not show (an SRFlow's residual form, ...)
        return weights.detect(sd, spec, **state.get("params", {}).get("generator", {}))
    desc, _ = zoo.resolve(spec)
    return desc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "pipelines" / "vhs-esrgan.yml"))
    ap.add_argument("--model", action="append", help="model name, weights file or checkpoint (repeatable)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    ap.add_argument("--seed", type=int, help="another degradation draw of the held-out set (default: the recipe's)")
    ap.add_argument("--run", type=Path, help="run folder whose metrics.jsonl holds the validation curve")
    args = ap.parse_args()

    photos = data_dir() / "photos"
    if not photos.is_dir():
        print(f"skipped: {photos} not found (set VSR_DATA)")
        return 0
    cfg = load_recipe(args.recipe, **{"data.frames": str(photos)})
    held_names = list(cfg.data.holdout)
    if args.seed is not None:
        cfg.eval.seed = args.seed
    _, held = load_frames(cfg.data, scale=cfg.scale)
    val = validation_set(held, cfg=cfg.data, ev=cfg.eval, scale=cfg.scale)
    print(f"held-out set: {len(val)} photos ({', '.join(held_names)}), ground truth = centre "
          f"{cfg.eval.crop}px of the photo at x{cfg.data.prescale:g}, LQ = VHS degradation x{cfg.scale} "
          f"(seed {cfg.eval.seed}); metrics on Y (BT.601), border {cfg.scale} px")
    torch.set_grad_enabled(False)

    rows: list[tuple[str, list[float], list[float], float]] = []
    b = [bicubic(lq, cfg.scale) for _, lq, _ in val]
    rows.append(("bicubic", [metrics.psnr(o, hq, border=cfg.scale) for o, (_, _, hq) in zip(b, val)],
                 [metrics.ssim(o, hq, border=cfg.scale) for o, (_, _, hq) in zip(b, val)], 0.0))
    for spec in args.model or ["realesrgan-x4plus", "esrgan"]:
        up = Upscaler(load_model(spec), device="cpu", precision=args.precision, tile=0)
        t = time.perf_counter()
        outs = [up.upscale_array(lq[None])[0] for _, lq, _ in val]
        dt = time.perf_counter() - t
        rows.append((spec, [metrics.psnr(o, hq, border=cfg.scale) for o, (_, _, hq) in zip(outs, val)],
                     [metrics.ssim(o, hq, border=cfg.scale) for o, (_, _, hq) in zip(outs, val)], dt))

    print(f"\n{'model':<40} {'PSNR-Y':>8} {'SSIM-Y':>8} {'vs bicubic':>11}  per image PSNR-Y")
    base = float(np.mean(rows[0][1]))
    for name, p, s, _ in rows:
        per = " ".join(f"{v:6.2f}" for v in p)
        print(f"{name[-40:]:<40} {np.mean(p):8.3f} {np.mean(s):8.4f} {np.mean(p) - base:+10.3f}  {per}")

    if args.run:
        lines = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        curve = [x for x in lines if "val/psnr_y" in x]
        print(f"\ncurve of {args.run} (EMA generator, precision of the run; training time excludes validation)")
        print(f"{'step':>6} {'train min':>10} {'PSNR-Y':>8} {'SSIM-Y':>8} {'vs bicubic':>11}")
        for x in curve:
            print(f"{x['step']:6d} {x['seconds'] / 60:10.1f} {x['val/psnr_y']:8.3f} {x['val/ssim_y']:8.4f} "
                  f"{x['val/psnr_y'] - base:+10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
