"""Invertible layers of SRFlow's conditional flow.

Every flow layer has ``encode(z, ft) -> (z, logdet)`` (image towards latent; ``logdet`` (B,) is the log
of the Jacobian determinant) and ``decode(z, ft) -> z``, its exact inverse. ``ft`` is the level's
conditioning feature (B, cond_ch, h, w); layers that do not use it ignore it. Parameter names follow
the authors' released checkpoints (``actnorm.bias``/``logs``, ``invconv.weight``, ``affine.fFeatures``,
``affine.fAffine``, a split's ``conv``), so their files load as they are.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SCALE_EPS = 1e-4  # added to sigmoid(h + 2) so that a coupling scale never reaches 0
ZERO_CONV_LOGSCALE = 3.0  # a zero-initialised conv's output is multiplied by exp(3 * logs)


def _pixels(z: torch.Tensor) -> int:
    return z.shape[-2] * z.shape[-1]


class ActNorm(nn.Module):
    """y = (x + bias) * exp(logs) per channel. Initialised from the first training batch it sees (the
    batch then has zero mean and unit variance per channel) unless weights were loaded into it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        # a plain attribute, not a buffer: the authors' files have no such entry (and reading a tensor
        # flag would synchronise with the GPU at every call); loading weights sets it
        self.initialized = False

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: ANN001 - nn.Module's hook
        super()._load_from_state_dict(*args, **kwargs)
        self.initialized = True

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(1.0 / (std + 1e-6)))
        self.initialized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.initialized:
            self._initialize(x)
        return (x + self.bias) * torch.exp(self.logs)

    def encode(self, z: torch.Tensor, ft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self(z)
        return z, self.logs.sum().expand(z.shape[0]) * _pixels(z)

    def decode(self, z: torch.Tensor, ft: torch.Tensor | None = None) -> torch.Tensor:
        return z * torch.exp(-self.logs) - self.bias


class InvConv1x1(nn.Module):
    """An invertible 1x1 convolution (Glow): a learned C x C mixing of the channels, initialised to a
    random rotation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        self.weight = nn.Parameter(q)

    def _inverse(self) -> torch.Tensor:
        w = self.weight
        if w.device.type == "mps":  # no float64 there
            return torch.linalg.inv(w.float()).to(w.dtype)
        return torch.linalg.inv(w.double()).to(w.dtype)  # float64: round trips stay exact to ~1e-6

    def encode(self, z: torch.Tensor, ft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.weight.shape[0]
        logdet = torch.linalg.slogdet(self.weight.float())[1].to(z.dtype) * _pixels(z)
        return F.conv2d(z, self.weight.view(c, c, 1, 1)), logdet.expand(z.shape[0])

    def decode(self, z: torch.Tensor, ft: torch.Tensor | None = None) -> torch.Tensor:
        c = self.weight.shape[0]
        return F.conv2d(z, self._inverse().view(c, c, 1, 1))


class Squeeze(nn.Module):
    """(B, C, H, W) <-> (B, 4C, H/2, W/2), channels in ``pixel_unshuffle`` order; volume preserving."""

    def encode(self, z: torch.Tensor, ft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return F.pixel_unshuffle(z, 2), z.new_zeros(z.shape[0])

    def decode(self, z: torch.Tensor, ft: torch.Tensor | None = None) -> torch.Tensor:
        return F.pixel_shuffle(z, 2)


class ConvActNorm(nn.Conv2d):
    """A bias-free convolution ('same' padding) followed by an ActNorm (``actnorm.*``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        nn.init.normal_(self.weight, 0.0, 0.05)
        self.actnorm = ActNorm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actnorm(super().forward(x))


class ZeroConv(nn.Conv2d):
    """A 3x3 convolution initialised to output zeros, with a learned per-channel log-scale ``logs``
    (C, 1, 1): y = conv(x) * exp(3 * logs). Starts every coupling and prior at the identity."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)
        self.logs = nn.Parameter(torch.zeros(out_ch, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * torch.exp(self.logs * ZERO_CONV_LOGSCALE)


def coupling_net(in_ch: int, out_ch: int, hidden: int) -> nn.Sequential:
    """conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm -> ReLU -> zero conv3x3 (indices 0, 2, 4)."""
    return nn.Sequential(ConvActNorm(in_ch, hidden, 3), nn.ReLU(), ConvActNorm(hidden, hidden, 1), nn.ReLU(),
                         ZeroConv(hidden, out_ch))


def _shift_scale(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved channels: even ones shift, odd ones scale (kept in (1e-4, 1 + 1e-4))."""
    return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0) + SCALE_EPS


class CondAffineCoupling(nn.Module):
    """Conditional affine coupling: first an affine transform of the whole tensor from the conditioning
    alone (``fFeatures``: cond -> 2C), then the second half of the channels transformed from the first
    half and the conditioning (``fAffine``: C/2 + cond -> 2 (C - C/2)). Both are x -> (x + shift) * scale."""

    def __init__(self, channels: int, cond_ch: int, hidden: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.fFeatures = coupling_net(cond_ch, 2 * channels, hidden)
        self.fAffine = coupling_net(self.half + cond_ch, 2 * (channels - self.half), hidden)

    def encode(self, z: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale = _shift_scale(self.fFeatures(ft))
        z = (z + shift) * scale
        logdet = torch.log(scale).sum(dim=(1, 2, 3))
        z1, z2 = z[:, :self.half], z[:, self.half:]
        shift, scale = _shift_scale(self.fAffine(torch.cat([z1, ft], dim=1)))
        z2 = (z2 + shift) * scale
        return torch.cat([z1, z2], dim=1), logdet + torch.log(scale).sum(dim=(1, 2, 3))

    def decode(self, z: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        z1, z2 = z[:, :self.half], z[:, self.half:]
        shift, scale = _shift_scale(self.fAffine(torch.cat([z1, ft], dim=1)))
        z = torch.cat([z1, z2 / scale - shift], dim=1)
        shift, scale = _shift_scale(self.fFeatures(ft))
        return z / scale - shift


class FlowStep(nn.Module):
    """ActNorm, invertible 1x1 conv and, optionally, a conditional affine coupling."""

    def __init__(self, channels: int, cond_ch: int, hidden: int, *, coupling: bool) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels)
        self.affine = CondAffineCoupling(channels, cond_ch, hidden) if coupling else None

    def encode(self, z: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, logdet = self.actnorm.encode(z)
        z, d = self.invconv.encode(z)
        logdet = logdet + d
        if self.affine is not None:
            z, d = self.affine.encode(z, ft)
            logdet = logdet + d
        return z, logdet

    def decode(self, z: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        if self.affine is not None:
            z = self.affine.decode(z, ft)
        return self.actnorm.decode(self.invconv.decode(z))


def gaussian_logp(x: torch.Tensor, mean: torch.Tensor | None = None,
                  logs: torch.Tensor | None = None) -> torch.Tensor:
    """log N(x; mean, exp(logs)^2) summed per sample -> (B,); standard normal when mean/logs are None."""
    if mean is None:
        ll = -0.5 * (math.log(2 * math.pi) + x * x)
    else:
        ll = -0.5 * (math.log(2 * math.pi) + 2.0 * logs + (x - mean) ** 2 * torch.exp(-2.0 * logs))
    return ll.sum(dim=(1, 2, 3))


class Split(nn.Module):
    """The last C/2 channels leave the flow; a learned Gaussian prior conditioned on the first (passing)
    half models them: (mean, logs) = interleaved channels of ``conv(z_pass)``. Their latent is
    eps = (z_out - mean) / exp(logs), so eps = 0 decodes to exactly the prior mean."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.leave = int(round(channels * 0.5))
        self.keep = channels - self.leave
        self.conv = ZeroConv(self.keep, 2 * self.leave)

    def _prior(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(z1)
        return h[:, 0::2], h[:, 1::2]

    def encode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z -> (passing half, log-likelihood of the leaving half under the prior (B,), eps)."""
        z1, z2 = z[:, :self.keep], z[:, self.keep:]
        mean, logs = self._prior(z1)
        return z1, gaussian_logp(z2, mean, logs), (z2 - mean) * torch.exp(-logs)

    def decode(self, z1: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mean, logs = self._prior(z1)
        return torch.cat([z1, mean + torch.exp(logs) * eps], dim=1)
