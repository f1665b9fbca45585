import numpy as np
import pytest
import torch

from vsr.engine import Upscaler, select_precision
from vsr.errors import VsrError
from vsr.train.loop import autocast_dtype
from vsr.engine.tiling import tile_starts

from conftest import TINY_CASES, tiny


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.mark.parametrize("name,params", TINY_CASES)
def test_tiled_output_equals_untiled(name, params):
    desc = tiny(name, **params)
    m = desc.size_multiple  # a network on m-pixel cells gets tiles and overlaps m times larger
    x = torch.rand(2, 3, 21 * m + 1, 31 * m + 3)  # odd sizes: padding, a short last tile
    full = Upscaler(desc, tile=0)(x)
    tiled = Upscaler(desc, tile=12 * m, overlap=8 * m)(x)
    assert full.shape == tiled.shape == (2, 3, round(x.shape[2] * desc.scale), round(x.shape[3] * desc.scale))
    assert psnr(full, tiled) >= 50


def test_tile_starts_cover_the_image_and_respect_alignment():
    for length, tile, overlap, align in [(100, 32, 8, 1), (101, 32, 8, 4), (33, 32, 8, 2), (20, 32, 8, 1)]:
        starts = tile_starts(length, tile, overlap, align)
        assert starts[0] == 0 and all(s % align == 0 for s in starts)
        assert starts[-1] + max(tile, length - starts[-1]) >= length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_arrays_keep_dtype_and_range():
    desc = tiny("compact", nf=8, num_conv=1, upscale=2)
    up = Upscaler(desc)
    for dtype, peak in ((np.uint8, 255), (np.uint16, 65535)):
        a = (np.random.rand(2, 9, 11, 3) * peak).astype(dtype)
        out = up.upscale_array(a)
        assert out.dtype == dtype and out.shape == (2, 18, 22, 3)
        ref = up(torch.from_numpy(a.astype(np.float32) / peak).permute(0, 3, 1, 2)).clamp(0, 1)
        expect = (ref * peak).round().permute(0, 2, 3, 1).numpy()
        assert np.abs(out.astype(np.int64) - expect).max() <= 1
    assert up.stats.model_seconds > 0


def test_non_finite_half_precision_output_is_recomputed_in_fp32():
    desc = tiny("compact", nf=8, num_conv=1, upscale=2)
    with torch.no_grad():  # activations beyond fp16's range (65504) but fine in fp32
        desc.model.body[0].weight.mul_(1e5)
        desc.model.body[-1].weight.div_(1e5)
    x = torch.rand(1, 3, 8, 8)
    ref = Upscaler(desc, precision="fp32")(x)
    assert torch.isfinite(ref).all()
    half = Upscaler(desc, precision="fp16")
    out = half(x)
    assert half.stats.nonfinite_recomputed == 1
    assert torch.allclose(out, ref, atol=1e-4)


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert select_precision("auto", cpu) == torch.float32  # no native bf16 (the tests' setting)
    monkeypatch.setattr("vsr.engine.device.cpu_has_native_bf16", lambda: True)
    assert select_precision("auto", cpu) == torch.bfloat16
    assert autocast_dtype("auto", cpu) == torch.bfloat16
    assert select_precision("auto", torch.device("cuda")) == torch.float16
    assert select_precision("fp16", cpu) == torch.float16 and select_precision("fp32", cpu) == torch.float32
    with pytest.raises(VsrError, match="unknown precision 'fp8'"):
        select_precision("fp8", cpu)


def test_self_ensemble_averages_the_flipped_passes():
    from vsr.arch import ModelDescriptor

    equivariant = ModelDescriptor(arch="up", model=torch.nn.Upsample(scale_factor=2), params={}, scale=2, in_ch=3,
                                  out_ch=3, size_multiple=1)
    x = torch.rand(2, 3, 20, 30)
    for n in (4, 8):  # flips and transposes change nothing for a network that does not care
        assert torch.allclose(Upscaler(equivariant, ensemble=n)(x), Upscaler(equivariant)(x), atol=1e-6)
    desc = tiny("compact", nf=8, num_conv=2, upscale=2)
    net = Upscaler(desc, tile=0)
    by_hand = (net(x) + net(x.flip(-1)).flip(-1) + net(x.flip(-2)).flip(-2) + net(x.flip(-1, -2)).flip(-1, -2)) / 4
    assert torch.allclose(Upscaler(desc, tile=0, ensemble=4)(x), by_hand, atol=1e-5)
    assert not torch.allclose(Upscaler(desc, tile=0, ensemble=8)(x), by_hand, atol=1e-3)
    with pytest.raises(VsrError, match="ensemble"):
        Upscaler(desc, ensemble=3)


def _installed_openvino(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setattr("vsr.engine.openvino.available", lambda: True)


@pytest.mark.parametrize("name,params", [("compact", dict(nf=8, num_conv=2, upscale=4)),
                                         ("rrdb", dict(nf=8, nb=1, gc=4, scale=2))])
def test_openvino_backend_computes_what_pytorch_does(monkeypatch, name, params):
    _installed_openvino(monkeypatch)
    desc = tiny(name, **params)
    x = torch.rand(2, 3, 40, 36)
    ref = Upscaler(desc, device="cpu", precision="fp32", tile=0, backend="torch")(x)
    ov = Upscaler(desc, device="cpu", precision="fp32", tile=16, backend="auto")
    assert ov.backend == "openvino" and ov.identity()["backend"] == "openvino"
    assert (ov(x) - ref).abs().max() < 1e-4  # tiled: several compiled shapes
    bf16 = Upscaler(desc, device="cpu", precision="bf16", tile=0, backend="openvino")
    assert (bf16(x) - ref).abs().max() < 0.05


def test_backend_choice(monkeypatch):
    from vsr.engine import openvino

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert openvino.choose("auto", device=cpu, contract="plain") == "torch"  # not installed (the tests' setting)
    with pytest.raises(VsrError, match="needs OpenVINO"):
        openvino.choose("openvino", device=cpu, contract="plain")
    monkeypatch.setattr("vsr.engine.openvino.available", lambda: True)
    assert openvino.choose("auto", device=cpu, contract="plain") == "openvino"
    assert openvino.choose("auto", device=cpu, contract="sampled") == "torch"
    assert openvino.choose("auto", device=cuda, contract="plain") == "torch"
    assert openvino.choose("torch", device=cpu, contract="plain") == "torch"
    with pytest.raises(VsrError, match="plain networks on the CPU only"):
        openvino.choose("openvino", device=cpu, contract="recurrent")
    assert openvino.choose("auto", device=cpu, contract="plain", traceable=False) == "torch"  # switched
    with pytest.raises(VsrError, match="depends on the input"):
        openvino.choose("openvino", device=cpu, contract="plain", traceable=False)
    with pytest.raises(VsrError, match="unknown backend"):
        openvino.choose("tensorrt", device=cpu, contract="plain")


def _out_of_memory_on_a_gpu(monkeypatch, engine):
    """The engine as on a GPU that runs out of memory at every size: the tiles it tries are recorded."""
    tried = []

    def oom(fn, x, *, tile, **kwargs):
        tried.append(tile)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr("vsr.engine.upscaler.tiled", oom)
    monkeypatch.setattr(engine, "device", torch.device("cuda"))
    return tried


def test_out_of_memory_does_not_tile_a_fractional_scale(monkeypatch):

    engine = Upscaler(tiny("compact", nf=8, num_conv=1, upscale=2, out_scale=0.75), device="cpu", tile=0)
    assert engine.desc.scale == 1.5
    tried = _out_of_memory_on_a_gpu(monkeypatch, engine)
    with pytest.raises(VsrError, match="tiling needs an integer scale"):
        engine._tiled(torch.rand(1, 3, 64, 64), lambda part, origin, n: part)
    assert tried == [0]  # the whole frame was tried; a tile at scale int(1.5) = 1 never was
