"""int8 convolutions: a network whose convolutions take 8-bit inputs and 8-bit weights, run by OpenVINO.

A convolution's input is quantised per tensor (asymmetric, 0-255 over a range that includes 0), its
weights per output channel (symmetric, -127..127). The input ranges decide how faithful the result is, and
they are learned: ``calibrate`` finds each convolution's input range (minimum to maximum, nothing clipped:
clipping even 0.01% of a super-resolution network's activations cost 8 dB here), and training with the
convolutions wrapped (``wrap(..., learn=True)``, a recipe's ``quantize: int8``) adapts weights and ranges
to each other. The result is stored as an ordinary weights file whose ``vsr.int8`` metadata holds the
ranges (the trainer's export: ``plain_state_dict`` and ``metadata``); a model card names it (``int8:
FILE``) so that ``--precision int8`` and the CPU's measured choice (vsr.engine.autotune) can run it.
OpenVINO turns the fake-quantise operations of the wrapped module into int8 kernels (VNNI where the CPU
has it).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from ..errors import VsrError

FILE = "int8"  # ModelDescriptor.extra: the model's int8 weights file (its card's int8)
KEY = "vsr.int8"  # safetensors metadata: [[scale, zero_point], ...] per convolution, in module order
LEVELS = 255  # 8-bit input: 0..255
WEIGHT_MAX = 127  # 8-bit weights: -127..127


class QConv2d(nn.Conv2d):
    """A Conv2d computing on 8-bit-quantised input and weights (simulated in floating point; OpenVINO
    runs it in int8). ``learn``: the input range trains with the weights (learned step size)."""

    def __init__(self, conv: nn.Conv2d, scale: float, zero_point: float, *, learn: bool = False) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        self.load_state_dict(conv.state_dict())
        self.learn = learn
        self.scale = nn.Parameter(torch.tensor([float(scale)]), requires_grad=learn)
        self.zero_point = nn.Parameter(torch.tensor([float(zero_point)]), requires_grad=learn)
        self.fixed: tuple[float, int] | None = None if learn else self.constants()

    def constants(self) -> tuple[float, int]:
        return float(self.scale), min(max(int(round(float(self.zero_point))), 0), LEVELS)

    def forward(self, given: torch.Tensor) -> torch.Tensor:
        if self.learn and self.training:
            x = torch._fake_quantize_learnable_per_tensor_affine(given.float(), self.scale, self.zero_point, 0,
                                                                 LEVELS, 1.0)
        else:  # constants: what the OpenVINO converter turns into a FakeQuantize
            scale, zero = self.fixed or self.constants()
            x = torch.fake_quantize_per_tensor_affine(given.float(), scale, zero, 0, LEVELS)
        w = self.weight.float()
        step = (w.detach().abs().amax(dim=(1, 2, 3)) / WEIGHT_MAX).clamp_min(1e-12)
        w = torch.fake_quantize_per_channel_affine(w, step, torch.zeros_like(step, dtype=torch.int32), 0,
                                                   -WEIGHT_MAX, WEIGHT_MAX)
        return self._conv_forward(x, w, None if self.bias is None else self.bias.float()).to(given.dtype)


def convolutions(module: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def calibrate(module: nn.Module, batches: Iterable[torch.Tensor]) -> list[tuple[float, float]]:
    """(scale, zero_point) of each convolution's input: its minimum to maximum over ``batches`` (and 0)."""
    convs = convolutions(module)
    if not convs:
        raise VsrError("int8: this network has no convolutions to quantise")
    lo, hi = [0.0] * len(convs), [0.0] * len(convs)

    def seen(i: int):
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            lo[i], hi[i] = min(lo[i], float(args[0].min())), max(hi[i], float(args[0].max()))
        return hook

    handles = [m.register_forward_pre_hook(seen(i)) for i, (_, m) in enumerate(convs)]
    try:
        with torch.no_grad():
            for x in batches:
                module(x)
    finally:
        for h in handles:
            h.remove()
    out = []
    for a, b in zip(lo, hi):
        scale = max(b - a, 1e-6) / LEVELS
        out.append((scale, float(round(-a / scale))))
    return out


def wrap(module: nn.Module, ranges: list[tuple[float, float]], *, learn: bool = False) -> nn.Module:
    """``module`` (changed in place) with each Conv2d replaced by a QConv2d of the given input range."""
    convs = convolutions(module)
    if len(convs) != len(ranges):
        raise VsrError(f"int8: {len(ranges)} input ranges for a network of {len(convs)} convolutions")
    for (name, conv), (scale, zero) in zip(convs, ranges):
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, QConv2d(conv, scale, zero, learn=learn))
    return module


def ranges(module: nn.Module) -> list[tuple[float, float]]:
    """The input ranges of a wrapped module's convolutions."""
    return [(float(m.scale), float(m.zero_point)) for _, m in convolutions(module) if isinstance(m, QConv2d)]


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A wrapped module's weights under the unwrapped network's names (its ranges left out)."""
    quantisers = {f"{n}.{p}" for n, m in convolutions(module) if isinstance(m, QConv2d)
                  for p in ("scale", "zero_point")}
    return {k: v for k, v in module.state_dict().items() if k not in quantisers}


def metadata(module: nn.Module) -> dict[str, str]:
    return {KEY: json.dumps(ranges(module))}


def load(module: nn.Module, path: str | Path) -> nn.Module:
    """A copy of ``module`` with the weights of the int8 file ``path``, its convolutions wrapped with the
    file's ranges (in evaluation mode: what OpenVINO converts)."""
    from safetensors import SafetensorError, safe_open

    from ..weights import read_state_dict

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise VsrError(f"cannot read the int8 weights {path}: {e}") from None
    found = read_ranges(meta, path)
    net = copy.deepcopy(module).float().eval()
    try:
        net.load_state_dict(read_state_dict(path))
    except RuntimeError:
        raise VsrError(f"{path}: its int8 weights are not of this network; its card names the wrong file") from None
    return wrap(net, found).eval()


def read_ranges(meta: dict[str, str], path: Path | str) -> list[tuple[float, float]]:
    try:
        found = json.loads(meta[KEY])
        if not isinstance(found, list) or not all(
                isinstance(r, list) and len(r) == 2 and r[0] > 0 for r in found):
            raise ValueError
        return [(float(s), float(z)) for s, z in found]
    except (KeyError, ValueError, TypeError):
        raise VsrError(f"{path}: no valid int8 ranges in its '{KEY}' metadata; make it again with a recipe "
                       "that has 'quantize: int8'") from None
