"""Dummy networks for the engine's sampled and recurrent contracts, registered only by tests.

Each is tiny and its output is easy to predict, so tests can tell whether the engine honoured the
contract: seeded latents (batching, tiling and resuming must not change them), temperature 0, and a
state carried from frame to frame that a reset clears.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vsr import arch, weights


def up(x: torch.Tensor, s: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=s, mode="nearest")


class SampledDummy(nn.Module):
    """x2; y = gain * up(x) + latents, with two latents at different resolutions as a flow has
    (one at half the input's size, one at the output's)."""

    def __init__(self, *, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.sampled_gain = nn.Parameter(torch.tensor(0.9))

    def latent_shapes(self, h: int, w: int) -> list[tuple[int, int, int]]:
        assert h % 2 == 0 and w % 2 == 0
        return [(3, h // 2, w // 2), (1, h * self.scale, w * self.scale)]

    def reverse(self, x: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        coarse, fine = latents
        return self.sampled_gain * up(x, self.scale) + 0.1 * up(coarse, 2 * self.scale) + 0.05 * fine

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the deterministic part (temperature 0)
        return self.sampled_gain * up(x, self.scale)


class RecurrentDummy(nn.Module):
    """x2; y = up(x) for a fresh start, else a mix of up(x) and the previous output (so every output
    depends on all frames since the last reset)."""

    def __init__(self, *, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.recurrent_mix = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor, prev_x: torch.Tensor | None, prev_y: torch.Tensor | None) -> torch.Tensor:
        y = up(x, self.scale)
        if prev_y is None:
            return y
        return (1 - self.recurrent_mix) * y + self.recurrent_mix * prev_y


def _detect(key: str, params: dict):
    return lambda sd: (dict(params), dict(sd)) if set(sd) == {key} else None


def _describe_sampled(p, model) -> arch.ModelDescriptor:
    return arch.ModelDescriptor(arch="dummy_sampled", model=model, params=p, scale=p["scale"], in_ch=3, out_ch=3,
                                size_multiple=2, tile_overlap=4, contract="sampled", tiling="latent",
                                settings=("temperature", "seed"))


def _describe_recurrent(p, model) -> arch.ModelDescriptor:
    return arch.ModelDescriptor(arch="dummy_recurrent", model=model, params=p, scale=p["scale"], in_ch=3,
                                out_ch=3, size_multiple=1, tile_overlap=4, contract="recurrent", context_frames=3)


DUMMIES = [
    arch.Arch("dummy_sampled", _detect("sampled_gain", {"scale": 2}), _describe_sampled, SampledDummy),
    arch.Arch("dummy_recurrent", _detect("recurrent_mix", {"scale": 2}), _describe_recurrent, RecurrentDummy),
]


def register() -> None:
    """Add the dummies to the registry (once per process)."""
    for a in DUMMIES:
        if a not in arch.ARCHS:
            arch.register(a)


def save(name: str, path: Path) -> Path:
    register()
    weights.save(arch.build(name), path)
    return path


if __name__ == "__main__":  # `python tests/dummies.py upscale ...`: the vsr command with the dummies known
    register()
    from vsr.cli import main

    sys.exit(main(sys.argv[1:]))
