"""SRFlow (Lugmayr et al., ECCV 2020): a normalising flow of the HR image conditioned on RRDB features
of the LR image. Encoding (training) maps an HR image to Gaussian latents and gives its negative
log-likelihood; decoding maps latents (temperature * N(0, 1); all zero for the "mean" image) and the LR
image to an HR image.

Layout (x4: L = 3 levels; x8: L = 4): level i works at HR / 2^i. Each level squeezes 2x2, runs 2 flow
steps without coupling and K with a conditional affine coupling; levels 1..L-2 end with a split. The
conditioning of level i is the RRDB feature at its resolution (``conv_up{k}`` before its LeakyReLU for
LR * 2^k, the trunk output at LR, the trunk bilinearly downscaled below) with the outputs of a few trunk
blocks (evenly spaced from block 1 to the last: [1, 8, 15, 22] of 23, [1, 3, 5, 7] of 8) appended,
resized with nearest: nf * (1 + cond_blocks) channels (320 for the released models).

``authors_rrdb``: the authors' RRDBNet, which their released checkpoints were trained with, differs from
ESRGAN's in two places: its trunk output is the last block's output plus ``conv_body`` of it (not the
first conv's output plus it), and its ``conv_up{k}`` features are taken after the LeakyReLU (their
in-place activation overwrites them). Their checkpoints' layout selects it; our own models keep ESRGAN's.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..rrdb import RRDB
from .layers import ActNorm, FlowStep, Split, Squeeze, gaussian_logp

PLAIN_STEPS = 2  # flow steps without coupling at the start of each level


def cond_block_indices(nb: int, count: int) -> list[int]:
    """Trunk blocks whose outputs condition the flow: ``count`` evenly spaced from 1 to nb - 1."""
    first = min(1, nb - 1)
    if count == 1:
        return [nb - 1]
    return [first + round(i * (nb - 1 - first) / (count - 1)) for i in range(count)]


class ConditionEncoder(nn.Module):
    """An RRDBNet (BasicSR names) whose features condition the flow. ``conv_hr``/``conv_last`` (and the
    upsampling convs past the finest level) make its own SR output, unused by the flow."""

    def __init__(self, *, in_ch: int, nf: int, nb: int, gc: int, scale: int, cond_blocks: int,
                 authors_rrdb: bool = False) -> None:
        super().__init__()
        self.ups = int(math.log2(scale))
        self.authors_rrdb = authors_rrdb  # see the module's docstring
        self.cond_blocks = cond_block_indices(nb, cond_blocks)
        if len(set(self.cond_blocks)) != cond_blocks:
            raise ValueError(f"{cond_blocks} conditioning blocks need a trunk of more than {nb} blocks")
        self.conv_first = nn.Conv2d(in_ch, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf=nf, gc=gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        for k in range(1, self.ups + 1):
            self.add_module(f"conv_up{k}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, in_ch, 3, 1, 1)

    def forward(self, lr: torch.Tensor, ks: list[int], *, sr: bool = False
                ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """Conditioning for the levels at LR * 2^k for each k in ``ks``: {k: (B, nf * (1 + n), h, w)},
        and with ``sr`` the network's own SR image (:meth:`sr`) from the same trunk pass."""
        fea = self.conv_first(lr)
        blocks = []
        x = fea
        for i, block in enumerate(self.body):
            x = block(x)
            if i in self.cond_blocks:
                blocks.append(x)
        trunk = self._trunk(fea, x)
        appended = torch.cat(blocks, dim=1)  # (B, nf * n, h, w)
        feats = {0: trunk}
        fea = trunk
        for k in range(1, max(ks) + 1):
            up = getattr(self, f"conv_up{k}")(F.interpolate(fea, scale_factor=2, mode="nearest"))
            fea = F.leaky_relu(up, 0.2)
            feats[k] = fea if self.authors_rrdb else up
        h, w = lr.shape[-2:]
        out = {}
        for k in ks:
            size = (h * 2 ** k, w * 2 ** k) if k >= 0 else (h // 2 ** -k, w // 2 ** -k)
            level = feats[k] if k >= 0 else F.interpolate(trunk, size=size, mode="bilinear", align_corners=False)
            out[k] = torch.cat([level, F.interpolate(appended, size=size, mode="nearest")], dim=1)
        if not sr:
            return out, None
        for k in range(max(max(ks), 0) + 1, self.ups + 1):
            fea = F.leaky_relu(getattr(self, f"conv_up{k}")(F.interpolate(fea, scale_factor=2, mode="nearest")), 0.2)
        return out, self.conv_last(F.leaky_relu(self.conv_hr(fea), 0.2))

    def _trunk(self, first: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """The LR feature from the first conv's output and the last block's."""
        return (blocks if self.authors_rrdb else first) + self.conv_body(blocks)

    def sr(self, lr: torch.Tensor) -> torch.Tensor:
        """The RRDBNet's own (L1-trained) super-resolved image."""
        fea = self.conv_first(lr)
        fea = self._trunk(fea, self.body(fea))
        for k in range(1, self.ups + 1):
            fea = F.leaky_relu(getattr(self, f"conv_up{k}")(F.interpolate(fea, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(fea), 0.2))


class FlowUpsampler(nn.Module):
    """The flow's layers in one list, in encoding order: per level a squeeze, the flow steps, a split."""

    def __init__(self, *, in_ch: int, levels: int, K: int, cond_ch: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.level_of: list[int] = []  # the level (1..L) of each layer
        c = in_ch
        for level in range(1, levels + 1):
            c *= 4
            self._add(Squeeze(), level)
            for i in range(PLAIN_STEPS + K):
                self._add(FlowStep(c, cond_ch, hidden, coupling=i >= PLAIN_STEPS), level)
            if level <= levels - 2:
                split = Split(c)
                self._add(split, level)
                c = split.keep
        self.out_ch = c

    def _add(self, layer: nn.Module, level: int) -> None:
        self.layers.append(layer)
        self.level_of.append(level)

    def encode(self, z: torch.Tensor, fts: dict[int, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """HR (B, C, H, W) -> (top z, log-det plus the splits' log-likelihoods (B,), splits' eps fine to coarse)."""
        logdet = z.new_zeros(z.shape[0])
        eps = []
        for layer, level in zip(self.layers, self.level_of):
            if isinstance(layer, Split):
                z, ll, e = layer.encode(z)
                logdet = logdet + ll
                eps.append(e)
            else:
                z, d = layer.encode(z, fts[level])
                logdet = logdet + d
        return z, logdet, eps

    def decode(self, z: torch.Tensor, eps: list[torch.Tensor], fts: dict[int, torch.Tensor]) -> torch.Tensor:
        """(top z, splits' eps coarse to fine) -> HR."""
        eps = list(eps)
        for layer, level in zip(reversed(self.layers), reversed(self.level_of)):
            if isinstance(layer, Split):
                z = layer.decode(z, eps.pop(0))
            else:
                z = layer.decode(z, fts[level])
        assert not eps, "more latents than splits"
        return z


def fp32(t: torch.Tensor) -> torch.autocast:
    """The flow runs in fp32 even under autocast: its reverse pass divides by coupling scales down to 1e-4
    and inverts the 1x1 convolutions (the engine runs only the encoder in half precision)."""
    return torch.autocast(t.device.type, enabled=False)


class SRFlowNet(nn.Module):
    """SRFlow. ``forward(hr, lr) -> (latents, nll)`` for training; ``reverse(lr, latents) -> hr`` and
    ``latent_shapes(h, w)`` for the engine's sampled contract. Latents, in order: the top z, then each
    split's eps from the coarsest level to the finest (the order decoding consumes them)."""

    def __init__(self, *, scale: int = 4, nf: int = 64, nb: int = 23, gc: int = 32, K: int = 16, L: int = 3,
                 hidden: int = 64, cond_blocks: int = 4, residual: bool = False, authors_rrdb: bool = False) -> None:
        super().__init__()
        if scale not in (2, 4, 8, 16):
            raise ValueError(f"SRFlow scale must be 2, 4, 8 or 16, got {scale}")
        if L < 1 or K < 0 or nb < 1 or not 1 <= cond_blocks <= nb:
            raise ValueError(f"expected L >= 1, K >= 0, nb >= 1 and 1 <= cond_blocks <= nb, got "
                             f"L={L}, K={K}, nb={nb}, cond_blocks={cond_blocks}")
        self.scale, self.L, self.in_ch = scale, L, 3
        self.size_multiple = max(1, 2 ** L // scale)  # the top level works at LR * scale / 2^L
        self.encoder = ConditionEncoder(in_ch=3, nf=nf, nb=nb, gc=gc, scale=scale, cond_blocks=cond_blocks,
                                        authors_rrdb=authors_rrdb)
        self.flow = FlowUpsampler(in_ch=3, levels=L, K=K, cond_ch=nf * (1 + cond_blocks), hidden=hidden)
        # level i works at LR * 2^k, k = log2(scale) - i
        self.level_k = {i: int(math.log2(scale)) - i for i in range(1, L + 1)}
        self.encoder_frozen = False  # see freeze_encoder
        # residual: the flow models the HR image minus the encoder's own SR image (``encoder.sr``), so that
        # temperature 0 starts from that image and the flow learns what the L1-trained RRDB misses
        self.residual = residual

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Training stage 2 (``frozen``): the encoder's weights take no gradients and the conditioning is
        computed without an autograd graph. Stage 3 (not ``frozen``): the encoder trains with the flow,
        except its SR head (:meth:`head_parameter_names`) where no pass uses it."""
        head = set(self.head_parameter_names())
        for name, p in self.named_parameters():
            if name.startswith("encoder."):
                p.requires_grad_(not frozen and name not in head)
        self.encoder_frozen = frozen

    @torch.no_grad()
    def initialize_actnorms(self, hr: torch.Tensor, lr: torch.Tensor, *, quant: int = 0) -> int:
        """Data-dependent initialisation of every ActNorm not yet initialised (by loaded weights or an
        earlier call) from a training batch: one encoding pass in training mode, so each ActNorm sees the
        output of the (already initialised) layers before it. Returns how many were initialised."""
        fresh = [m for m in self.modules() if isinstance(m, ActNorm) and not m.initialized]
        if fresh:
            was_training = self.training
            self.train()
            self(hr, lr, quant=quant)
            self.train(was_training)
        assert all(m.initialized for m in fresh)
        return len(fresh)

    def head_parameter_names(self) -> list[str]:
        """Parameters of the RRDBNet's own SR head, which neither direction of the flow uses (kept so that
        its weights travel with the model; leave them out of a flow optimiser). None for a ``residual`` flow."""
        if self.residual:
            return []
        used = max(self.level_k.values())
        return [n for n, _ in self.named_parameters()
                if n.startswith(("encoder.conv_hr.", "encoder.conv_last.")) or any(
                    n.startswith(f"encoder.conv_up{k}.") for k in range(max(used, 0) + 1, self.encoder.ups + 1))]

    def conditioning(self, lr: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """({level: (B, cond_ch, h_level, w_level)}, the base image the flow's output adds to: the
        encoder's SR image for a ``residual`` flow, else None)."""
        with torch.no_grad() if self.encoder_frozen else contextlib.nullcontext():
            by_k, base = self.encoder(lr, sorted(set(self.level_k.values())), sr=self.residual)
        # the encoder may have run in half precision (autocast); the flow takes fp32
        return {i: by_k[k].float() for i, k in self.level_k.items()}, None if base is None else base.float()

    def latent_shapes(self, h: int, w: int) -> list[tuple[int, int, int]]:
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"SRFlow input must be a multiple of {m} in size, got {h}x{w}")
        c, hh, ww = self.in_ch, h * self.scale, w * self.scale
        splits = []
        for layer in self.flow.layers:
            if isinstance(layer, Squeeze):
                c, hh, ww = c * 4, hh // 2, ww // 2
            elif isinstance(layer, Split):
                splits.append((layer.leave, hh, ww))
                c = layer.keep
        return [(c, hh, ww)] + splits[::-1]

    def fallback(self, lr: torch.Tensor) -> torch.Tensor:
        """The engine's last resort where the reverse pass is not finite even at temperature 0."""
        return self.encoder.sr(lr)

    def encode(self, hr: torch.Tensor, lr: torch.Tensor) -> list[torch.Tensor]:
        """HR (B, 3, sh, sw) in [0, 1] and its LR (B, 3, h, w) -> latents in :meth:`reverse`'s order."""
        return self(hr, lr)[0]

    def forward(self, hr: torch.Tensor, lr: torch.Tensor, *, quant: int = 0
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(latents, nll (B,)): the negative log-likelihood of ``hr`` given ``lr`` in bits per HR pixel
        (summed over the colour channels). ``quant`` > 0 adds uniform dequantisation noise of width 1/quant
        (the likelihood then is that of the quantised image: -ln(quant) per pixel in the log-det)."""
        pixels = hr.shape[-2] * hr.shape[-1]
        z = hr
        logdet = hr.new_zeros(hr.shape[0])
        if quant:
            z = z + (torch.rand_like(z) - 0.5) / quant
            logdet = logdet - math.log(quant) * pixels
        fts, base = self.conditioning(lr)
        if base is not None:
            z = z - base
        with fp32(z):
            z, d, eps = self.flow.encode(z.float(), fts)
        objective = logdet + d + gaussian_logp(z)
        return [z] + eps[::-1], -objective / (math.log(2.0) * pixels)

    def reverse(self, lr: torch.Tensor, latents: list[torch.Tensor]) -> torch.Tensor:
        """LR (B, 3, h, w) and latents (shapes from :meth:`latent_shapes`) -> HR (B, 3, sh, sw)."""
        shapes = self.latent_shapes(*lr.shape[-2:])
        got = [tuple(z.shape[1:]) for z in latents]
        if got != shapes:
            raise ValueError(f"SRFlow latents for a {lr.shape[-2]}x{lr.shape[-1]} input: expected {shapes}, got {got}")
        fts, base = self.conditioning(lr)
        with fp32(lr):
            hr = self.flow.decode(latents[0].float(), [z.float() for z in latents[1:]], fts)
        return hr if base is None else hr + base
