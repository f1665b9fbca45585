"""The ncnn import agrees with the ncnn package's own CPU inference of the same released model."""
import numpy as np
import pytest

from vsr import images, ncnn, weights
from vsr.cli import main
from vsr.errors import VsrError

ncnn_rt = pytest.importorskip("ncnn")
skimage_data = pytest.importorskip("skimage.data")


def ncnn_infer(name: str, chw: np.ndarray) -> np.ndarray:
    d = ncnn.package_models_dir()
    net = ncnn_rt.Net()
    net.opt.use_vulkan_compute = False
    for opt in ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed"):
        setattr(net.opt, opt, False)  # fp32 arithmetic, as our reference
    assert net.load_param(str(d / f"{name}.param")) == 0 and net.load_model(str(d / f"{name}.bin")) == 0
    ex = net.create_extractor()
    mat = ncnn_rt.Mat(chw)  # does not copy: chw must outlive extract()
    ex.input("data", mat)
    ret, out = ex.extract("output")
    assert ret == 0
    return np.array(out).copy()


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse)) if mse else float("inf")


@pytest.mark.parametrize("model,ncnn_name", [
    ("realesrgan-x4plus", "realesrgan-x4plus"),
    ("realesr-animevideov3-x3", "realesr-animevideov3-x3"),
])
def test_cli_output_agrees_with_ncnn(tmp_path, model, ncnn_name):
    crop = skimage_data.astronaut()[40:88, 180:244]  # (48, 64, 3) real photograph
    src, dst = tmp_path / "crop.png", tmp_path / "out.png"
    images.write_image(src, crop)
    assert main(["upscale", str(src), "-o", str(dst), "--model", model, "--precision", "fp32", "--quiet"]) == 0
    ours = images.read_image(dst)
    chw = np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / 255.0
    ref = ncnn_infer(ncnn_name, chw)
    ref8 = (np.clip(ref, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    assert ours.shape == ref8.shape
    assert psnr8(ours, ref8) >= 40


def test_float_conversion_is_exact_to_fp32_rounding():
    d = ncnn.package_models_dir()
    sd, overrides = ncnn.convert(d / "realesr-animevideov3-x2.param", d / "realesr-animevideov3-x2.bin")
    desc = weights.detect(sd, **overrides)
    assert desc.arch == "compact" and desc.scale == 2 and desc.num_params == 621_424
    import torch
    x = np.random.RandomState(0).rand(3, 20, 28).astype(np.float32)
    with torch.no_grad():
        ours = desc.model(torch.from_numpy(x)[None])[0].numpy()
    ref = ncnn_infer("realesr-animevideov3-x2", x)
    assert 10 * np.log10(1 / np.mean((ours - ref) ** 2)) > 100


def test_an_ncnn_pair_is_a_model_path(tmp_path):
    from vsr import zoo

    d = ncnn.package_models_dir()
    desc, card = zoo.resolve(str(d / "realesr-animevideov3-x3.param"))
    assert card is None and desc.arch == "compact" and desc.scale == 3


def test_whole_bin_is_consumed_and_checked(tmp_path):
    d = ncnn.package_models_dir()
    param, data = d / "realesr-animevideov3-x4.param", (d / "realesr-animevideov3-x4.bin").read_bytes()
    (tmp_path / "long.bin").write_bytes(data + b"\0" * 8)
    (tmp_path / "short.bin").write_bytes(data[:-100])
    with pytest.raises(VsrError, match="left over"):
        ncnn.convert(param, tmp_path / "long.bin")
    with pytest.raises(VsrError, match="ends early"):
        ncnn.convert(param, tmp_path / "short.bin")
    bad = tmp_path / "bad.param"
    bad.write_text("123\n1 1\n")
    with pytest.raises(VsrError, match="not an ncnn"):
        ncnn.convert(bad, tmp_path / "long.bin")
