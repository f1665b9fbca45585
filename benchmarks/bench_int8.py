"""How far int8 can go and stay faithful: vsr's int8 (weights and input ranges trained together by a
recipe with `quantize: int8`, run through OpenVINO) against NNCF's post-training quantisation (its default
range estimate, and minimum-maximum ranges), bf16 and fp32, all against PyTorch fp32 on held-out crops.

    python benchmarks/bench_int8.py [--model compact] [--size 256]

Crops of ../shared/data/photos at a quarter of their size (about an LR frame's detail): the last 6 photos
held out (timed at --size), 64 px crops of the rest for NNCF's calibration. The model's card must name its
int8 weights (compact's does: pipelines/int8-compact.yml). Needs `nncf` (pip install nncf) for its rows.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vsr import images, zoo
from vsr.engine import quantize

DATA = Path(os.environ.get("VSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CEILING = 60.0  # PSNR counted up to this: fp32 against itself would be infinite


def crop(path: Path, side: int) -> np.ndarray:
    img = images.to_rgb8(images.read_image(path))[::4, ::4]
    h, w = img.shape[:2]
    c = img[h // 2 - side // 2:h // 2 + side // 2, w // 2 - side // 2:w // 2 + side // 2]
    return np.ascontiguousarray(c.transpose(2, 0, 1)[None], dtype=np.float32) / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return min(10 * np.log10(1 / mse), CEILING) if mse else CEILING


def main() -> None:
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="compact")
    ap.add_argument("--size", type=int, default=256, help="held-out crop side, timed")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    desc, _ = zoo.resolve(args.model)
    photos = sorted((DATA / "photos").glob("*"))
    if len(photos) < 12:
        raise SystemExit(f"{DATA / 'photos'} holds {len(photos)} photos; this needs at least 12")
    if quantize.FILE not in desc.extra:
        raise SystemExit(f"model {args.model} has no int8 weights (its card names none)")
    # held out: the last 6 (the recipe's holdout is among the others: it trains on none of these either way)
    calib, held = [crop(p, 64) for p in photos[:-6]], [crop(p, args.size) for p in photos[-6:]]
    net = ov.convert_model(desc.model.float().eval(), example_input=torch.rand(1, 3, 64, 64),
                           input=[ov.PartialShape([1, 3, -1, -1])])
    core = ov.Core()

    def compiled(model, hint: str = "f32", side: int | None = None):
        if side:
            model = model.clone()
            model.reshape([1, 3, side, side])
        return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                 "INFERENCE_PRECISION_HINT": hint})

    plain = nncf.quantize(net, nncf.Dataset(calib), subset_size=len(calib))
    minmax = nncf.quantize(net, nncf.Dataset(calib), subset_size=len(calib),
                           advanced_parameters=AdvancedQuantizationParameters(
                               activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX))
    trained = ov.convert_model(quantize.load(desc.model, desc.extra[quantize.FILE]),
                               example_input=torch.rand(1, 3, 64, 64), input=[ov.PartialShape([1, 3, -1, -1])])
    ref = compiled(net, side=args.size)
    refs = [ref(x)[0] for x in held]

    def row(label: str, model, hint: str) -> None:
        c = compiled(model, hint, args.size)
        scores = [psnr(c(x)[0], r) for x, r in zip(held, refs)]
        c(held[0])
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            c(held[0])
            times.append(time.perf_counter() - t0)
        print(f"{label:<44}{statistics.median(times):9.3f}{min(scores):10.1f}{statistics.median(scores):10.1f}")

    print(f"{args.model}, {args.size}x{args.size} held-out crops, {torch.get_num_threads()} threads; "
          "PSNR against fp32")
    print(f"{'':<44}{'s/frame':>9}{'min dB':>10}{'median dB':>10}")
    row("fp32", net, "f32")
    row("bf16", net, "bf16")
    row("NNCF int8, its default ranges", plain, "f32")
    row("NNCF int8, min-max ranges", minmax, "f32")
    row("vsr int8 (trained weights and ranges)", trained, "f32")


if __name__ == "__main__":
    main()
