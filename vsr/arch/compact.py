"""Real-ESRGAN's compact network (SRVGGNetCompact).

``out = pixel_shuffle(body(x), r) + nearest(x, r)``; ``out_scale`` < 1 adds the final
non-antialiased bicubic resize that the released animevideov3 x2 / x3 models apply to an x4 net.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CompactNet(nn.Module):
    def __init__(self, *, in_ch: int = 3, out_ch: int = 3, nf: int = 64, num_conv: int = 16,
                 upscale: int = 4, out_scale: float = 1.0) -> None:
        super().__init__()
        if upscale not in (1, 2, 3, 4):
            raise ValueError(f"compact network upscale must be 1-4, got {upscale}")
        self.upscale = upscale
        self.out_scale = out_scale
        layers: list[nn.Module] = [nn.Conv2d(in_ch, nf, 3, 1, 1), nn.PReLU(nf)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(nf)]
        layers.append(nn.Conv2d(nf, out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    @property
    def scale(self) -> float:
        return self.upscale * self.out_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, sH, sW)
        out = F.pixel_shuffle(self.body(x), self.upscale)
        out = out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        if self.out_scale != 1.0:
            out = F.interpolate(out, scale_factor=self.out_scale, mode="bicubic",
                                align_corners=False, antialias=False)
        return out


def params_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, int] | None:
    """Constructor arguments from a ``body.N`` state dict, or None if it is not a compact net."""
    convs = sorted(int(k.split(".")[1]) for k in sd if k.startswith("body.") and k.endswith(".weight")
                   and sd[k].ndim == 4)
    if not convs or convs != list(range(0, 2 * len(convs) - 1, 2)):
        return None
    expected = {f"body.{i}.{p}" for i in convs for p in ("weight", "bias")}
    expected |= {f"body.{i + 1}.weight" for i in convs[:-1]}  # PReLU slopes
    if set(sd) != expected:
        return None
    first, last = sd["body.0.weight"], sd[f"body.{convs[-1]}.weight"]
    in_ch, nf = first.shape[1], first.shape[0]
    r2, rem = divmod(last.shape[0], in_ch)
    upscale = round(r2 ** 0.5)
    if rem or upscale * upscale != r2:
        raise ValueError(f"compact net: last conv has {last.shape[0]} outputs, expected 3*r*r")
    return {"in_ch": in_ch, "out_ch": in_ch, "nf": nf, "num_conv": len(convs) - 2, "upscale": upscale}
