"""How far int8 can go and stay faithful: NNCF post-training quantisation of a plain network in OpenVINO,
plain and with accuracy control (layers put back into floating point, most sensitive first, until the
PSNR against fp32 on validation crops holds the floor), against bf16 and fp32 on held-out crops.

    python benchmarks/bench_int8.py [--model compact] [--size 256] [--floor 40]

64 px crops of ../shared/data/photos at a quarter of their size (about an LR frame's detail): the last 6
photos held out, the 5 before them for validation, the rest for calibration. Needs `nncf` (pip install
nncf). Measured, not used by vsr: the engine's candidates (vsr.engine.autotune) have no int8 until it holds
40 dB at a gain in speed.
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

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="compact")
    ap.add_argument("--size", type=int, default=256, help="held-out crop side, timed")
    ap.add_argument("--floor", type=float, default=40.0, help="PSNR against fp32 the accuracy control keeps")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    desc, _ = zoo.resolve(args.model)
    photos = sorted((DATA / "photos").glob("*"))
    if len(photos) < 12:
        raise SystemExit(f"{DATA / 'photos'} holds {len(photos)} photos; this needs at least 12")
    # held out: the last 6; validation: the 5 before; calibration: the rest
    calib, val, held = [crop(p, 64) for p in photos[:-11]], [crop(p, 64) for p in photos[-11:-6]], \
        [crop(p, args.size) for p in photos[-6:]]
    net = ov.convert_model(desc.model.float().eval(), example_input=torch.rand(1, 3, 64, 64),
                           input=[ov.PartialShape([1, 3, -1, -1])])
    core = ov.Core()

    def compiled(model, hint: str = "f32", side: int | None = None):
        if side:
            model = model.clone()
            model.reshape([1, 3, side, side])
        return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                 "INFERENCE_PRECISION_HINT": hint})

    fp32 = compiled(net)
    items = [(x, fp32(x)[0]) for x in val]

    def validate(model, data) -> float:  # the worst crop decides
        return min(psnr(model(x)[0], ref) for x, ref in data)

    t = time.perf_counter()
    plain = nncf.quantize(net, nncf.Dataset(calib), subset_size=len(calib), fast_bias_correction=True)
    plain_s = time.perf_counter() - t
    t = time.perf_counter()
    controlled = nncf.quantize_with_accuracy_control(
        net, nncf.Dataset(calib), nncf.Dataset(items, lambda item: item[0]), validation_fn=validate,
        max_drop=CEILING - args.floor, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib),
        fast_bias_correction=True)
    controlled_s = time.perf_counter() - t
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

    fq = sum(op.get_type_name() == "FakeQuantize" for op in controlled.get_ordered_ops())
    print(f"{args.model}, {args.size}x{args.size} held-out crops, {torch.get_num_threads()} threads; quantised in "
          f"{plain_s:.0f} s (plain) and {controlled_s:.0f} s (accuracy control, {fq} quantisers left)")
    print(f"{'':<44}{'s/frame':>9}{'min dB':>10}{'median dB':>10}")
    row("fp32", net, "f32")
    row("bf16", net, "bf16")
    row("int8 (plain PTQ), rest bf16", plain, "bf16")
    row(f"int8 (accuracy control >= {args.floor:g} dB), rest bf16", controlled, "bf16")


if __name__ == "__main__":
    main()
