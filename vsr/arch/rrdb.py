"""ESRGAN generator (RRDBNet) in the BasicSR / Real-ESRGAN key layout.

Scale 4 is the native trunk; scales 2 and 1 feed the same x4 trunk with
``pixel_unshuffle(x, 2)`` / ``pixel_unshuffle(x, 4)`` as Real-ESRGAN does.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn


class ResidualDenseBlock(nn.Module):
    def __init__(self, *, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, *, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf=nf, gc=gc)
        self.rdb2 = ResidualDenseBlock(nf=nf, gc=gc)
        self.rdb3 = ResidualDenseBlock(nf=nf, gc=gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self, *, in_ch: int = 3, out_ch: int = 3, nf: int = 64, nb: int = 23,
                 gc: int = 32, scale: int = 4) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.unshuffle = 4 // scale  # 1 (x4), 2 (x2) or 4 (x1)
        self.conv_first = nn.Conv2d(in_ch * self.unshuffle ** 2, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf=nf, gc=gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, sH, sW)
        if self.unshuffle > 1:
            # callers pad to a multiple of `unshuffle` (see SIZE_MULTIPLE in the descriptor)
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


# --- key layouts -------------------------------------------------------------------------------

_MASTER = {  # ESRGAN master / SRFlow names -> BasicSR names
    "trunk_conv.": "conv_body.", "upconv1.": "conv_up1.", "upconv2.": "conv_up2.",
    "HRconv.": "conv_hr.", "conv_first.": "conv_first.", "conv_last.": "conv_last.",
}
_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_MASTER_RDB = re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$")


def to_basicsr_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Rename any of the three known RRDB key layouts to BasicSR's; None if ``sd`` is not an RRDBNet."""
    if "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd:
        return dict(sd)
    out: dict[str, torch.Tensor] = {}
    if "model.0.weight" in sd and any(_OLD_RDB.match(k) for k in sd):
        top = sorted({int(m.group(1)) for k in sd if (m := _OLD_TOP.match(k))})
        trunk = sorted({int(m.group(1)) for k in sd if (m := _OLD_TRUNK.match(k))})
        # model.0 conv_first, model.1.sub.{nb} trunk conv, then conv_up1, conv_up2, conv_hr, conv_last
        if len(trunk) != 1 or top[1:] != [3, 6, 8, 10]:
            return None
        names = dict(zip(top, ["conv_first", "conv_up1", "conv_up2", "conv_hr", "conv_last"]))
        for k, v in sd.items():
            if m := _OLD_RDB.match(k):
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            elif m := _OLD_TRUNK.match(k):
                out[f"conv_body.{m[2]}"] = v
            elif m := _OLD_TOP.match(k):
                out[f"{names[int(m[1])]}.{m[2]}"] = v
            else:
                return None
        return out
    if "conv_first.weight" in sd and "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        for k, v in sd.items():
            if m := _MASTER_RDB.match(k):
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            else:
                prefix = next((p for p in _MASTER if k.startswith(p)), None)
                if prefix is None:
                    return None
                out[_MASTER[prefix] + k[len(prefix):]] = v
        return out
    return None


def params_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, int]:
    """Infer constructor arguments from a BasicSR-layout state dict."""
    nb = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    nf, first_in = sd["conv_first.weight"].shape[:2]
    gc = sd["body.0.rdb1.conv1.weight"].shape[0]
    out_ch = sd["conv_last.weight"].shape[0]
    for in_ch, scale in ((out_ch, 4), (out_ch, 2), (out_ch, 1), (3, 4), (1, 4)):
        if first_in == in_ch * (4 // scale) ** 2:
            return {"in_ch": in_ch, "out_ch": out_ch, "nf": nf, "nb": nb, "gc": gc, "scale": scale}
    raise ValueError(f"RRDBNet conv_first has {first_in} input channels, expected 3, 12 or 48")
