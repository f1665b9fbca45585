"""Losses of the trainer, the maths: each is a plain function or a small module. Which loss a recipe's
type names, its defaults and checks: :mod:`vsr.train.loss_types`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..arch.recurrent import lr_flow, warp
from ..errors import VsrError

Tensor = torch.Tensor


PIXEL = {"l1": F.l1_loss, "l2": F.mse_loss}  # the pixel criteria (l2: the mean squared error)


def pixel(out: Tensor, target: Tensor, kind: str = "l1") -> Tensor:
    if kind not in PIXEL:
        raise VsrError(f"unknown pixel criterion {kind!r}; expected one of {', '.join(PIXEL)}")
    return PIXEL[kind](out, target)


def distill(out: Tensor, taught: Tensor, parts: Tensor, part: int | None) -> Tensor:
    """L1 to a teacher's output on the samples of one degradation part (all with ``part`` None),
    averaged over the whole batch: a part that drew a quarter of the samples weighs a quarter."""
    per_sample = (out - taught).abs().flatten(1).mean(1)
    if part is not None:
        per_sample = per_sample * (parts.to(out.device) == part)
    return per_sample.mean()


def nll(flow: Callable[..., tuple[list[Tensor], Tensor]], hr: Tensor, lr: Tensor, *, quant: int) -> Tensor:
    """A conditional flow's mean negative log-likelihood of ``hr`` given ``lr``, in bits per HR pixel
    (SRFlow: ``flow(hr, lr, quant=...) -> (latents, nll (B,))``); ``quant`` > 0 dequantises ``hr`` with
    uniform noise of width 1/quant."""
    return flow(hr, lr, quant=quant)[1].float().mean()


def flow_mean(flow: nn.Module, lr: Tensor) -> Tensor:
    """A conditional flow's temperature-0 image (every latent zero): what ``vsr upscale`` makes of ``lr``.
    A pixel loss on it keeps that image faithful while the likelihood shapes the rest of the distribution."""
    zeros = [lr.new_zeros(lr.shape[0], *shape) for shape in flow.latent_shapes(*lr.shape[-2:])]
    return flow.reverse(lr, zeros)


# --- translational consistency ------------------------------------------------------------------

def corner_offset(corner: int, patch: int, crop: int) -> tuple[int, int]:
    """(y, x) of corner 0 (top left), 1 (top right), 2 (bottom left), 3 (bottom right)."""
    d = patch - crop
    return (d if corner >= 2 else 0, d if corner % 2 else 0)


def corner_crops(lq: Tensor, corners: Tensor, crop: int) -> Tensor:
    """(B, C, p, p) -> (B, C, crop, crop): sample i cropped at its own corner."""
    p = lq.shape[-1]
    out = []
    for i, c in enumerate(corners.tolist()):
        y, x = corner_offset(c, p, crop)
        out.append(lq[i, :, y:y + crop, x:x + crop])
    return torch.stack(out)


def shared_regions(out_a: Tensor, out_b: Tensor, corners_a: Tensor, corners_b: Tensor, *,
                   patch: int, crop: int, scale: int) -> list[tuple[Tensor, Tensor]]:
    """The parts of two outputs (generated from two corner crops of one patch) that show the same
    place, per sample: [(C, h, w), (C, h, w)]. Adjacent corners share a larger region than
    diagonal ones, so the sizes differ from sample to sample."""
    pairs = []
    for i, (ca, cb) in enumerate(zip(corners_a.tolist(), corners_b.tolist())):
        (ya, xa), (yb, xb) = corner_offset(ca, patch, crop), corner_offset(cb, patch, crop)
        y0, x0 = max(ya, yb), max(xa, xb)  # shared region in patch coordinates
        y1, x1 = min(ya, yb) + crop, min(xa, xb) + crop
        s = scale
        pairs.append((out_a[i, :, (y0 - ya) * s:(y1 - ya) * s, (x0 - xa) * s:(x1 - xa) * s],
                      out_b[i, :, (y0 - yb) * s:(y1 - yb) * s, (x0 - xb) * s:(x1 - xb) * s]))
    return pairs


def translational(generator: Callable[[Tensor], Tensor], lq: Tensor, corners: Tensor, corners_b: Tensor, *,
                  crop: int, scale: int) -> tuple[Tensor, Tensor]:
    """Generate from each sample's corner crop A and from a second, different corner B (one
    batched call); return (output A, L1 between A and B on their shared region).

    Gradients flow through both outputs. A translation-equivariant generator gives exactly 0.
    """
    assert bool((corners != corners_b).all()), "corners A and B must differ"
    patch = lq.shape[-1]
    both = generator(torch.cat([corner_crops(lq, corners, crop), corner_crops(lq, corners_b, crop)]))
    out_a, out_b = both.chunk(2)
    pairs = shared_regions(out_a.float(), out_b.float(), corners, corners_b, patch=patch, crop=crop, scale=scale)
    # the mean of per-sample means: a batch split over processes gives the same value
    return out_a, torch.stack([F.l1_loss(a, b) for a, b in pairs]).mean()


def target_crop(hq: Tensor, corners: Tensor, *, patch: int, crop: int, scale: int) -> Tensor:
    """The ground truth of corner crops: (B, C, s*crop, s*crop)."""
    out = []
    for i, c in enumerate(corners.tolist()):
        y, x = corner_offset(c, patch, crop)
        out.append(hq[i, :, y * scale:(y + crop) * scale, x * scale:(x + crop) * scale])
    return torch.stack(out)


# --- adversarial --------------------------------------------------------------------------------

def gan_d_loss(d: nn.Module, real: Tensor, fake: Tensor, *, kind: str, noise: float, gp: float,
               rng: torch.Generator | None = None) -> Tensor:
    """Discriminator side. ``fake`` is detached by the caller. Input noise blurs the two
    distributions early on; ``gp`` weighs an R1 gradient penalty on the real inputs."""
    if noise > 0:
        real = real + noise * torch.randn(real.shape, generator=rng, dtype=real.dtype).to(real.device)
        fake = fake + noise * torch.randn(fake.shape, generator=rng, dtype=fake.dtype).to(fake.device)
    real = real.detach().requires_grad_(gp > 0)
    d_real, d_fake = d(real).float(), d(fake).float()
    if kind == "relativistic":
        loss = (F.binary_cross_entropy_with_logits(d_real - d_fake.mean(), torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake - d_real.mean(), torch.zeros_like(d_fake))) / 2
    else:
        loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))) / 2
    if gp > 0:
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        loss = loss + gp * grad.pow(2).flatten(1).sum(1).mean() / 2
    return loss


def gan_g_loss(d: nn.Module, real: Tensor, fake: Tensor, *, kind: str) -> Tensor:
    """Generator side: make ``fake`` look real (relativistic: more real than the real images). The
    discriminator gets no gradients from it (nor syncs them); each of its parameters keeps its own
    requires_grad afterwards, so parameters that ``optimizer.train_only`` froze stay frozen."""
    flags = [(p, p.requires_grad) for p in d.parameters()]
    d.requires_grad_(False)
    try:
        d_fake = d(fake).float()
        if kind == "relativistic":
            d_real = d(real).detach().float()
            return (F.binary_cross_entropy_with_logits(d_real - d_fake.mean(), torch.zeros_like(d_real))
                    + F.binary_cross_entropy_with_logits(d_fake - d_real.mean(), torch.ones_like(d_fake))) / 2
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


# --- perceptual ---------------------------------------------------------------------------------

_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
_VGG19_NAMES = [f"conv{b}_{i}" for b, n in enumerate([2, 2, 4, 4, 4], 1) for i in range(1, n + 1)]


class VGGFeatures(nn.Module):
    """VGG19 features up to one convolution (before its ReLU), ImageNet-normalised input.

    Weights come only from a file the user gives (torchvision's ``vgg19`` layout, ``features.N.*``);
    nothing is downloaded.
    """

    def __init__(self, *, weights: str | Path, layer: str = "conv5_4") -> None:
        super().__init__()
        if layer not in _VGG19_NAMES:
            raise VsrError(f"perceptual layer {layer!r} is unknown; use one of {', '.join(_VGG19_NAMES)}")
        from .. import weights as weights_io

        sd = weights_io.read_state_dict(weights)
        layers: list[nn.Module] = []
        c_in, conv_i, last = 3, 0, _VGG19_NAMES.index(layer)
        for v in _VGG19:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers.append(nn.Conv2d(c_in, v, 3, padding=1))
            if conv_i == last:
                break
            layers.append(nn.ReLU(inplace=True))
            c_in, conv_i = v, conv_i + 1
        self.features = nn.Sequential(*layers)
        own = {k: v for k, v in sd.items() if k.startswith("features.")}
        own = {k[len("features."):]: v for k, v in own.items()
               if int(k.split(".")[1]) < len(self.features)}
        try:
            self.features.load_state_dict(own)
        except RuntimeError as e:
            raise VsrError(f"{weights} is not a VGG19 (torchvision layout features.N.weight): "
                           f"{str(e).splitlines()[-1].strip()[:160]}") from None
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.features((x - self.mean) / self.std)


def perceptual(vgg: VGGFeatures, out: Tensor, target: Tensor) -> Tensor:
    return F.l1_loss(vgg(out), vgg(target).detach())


# --- ping-pong (temporal) ----------------------------------------------------------------------

def pingpong_order(frames: int) -> list[int]:
    """The frames a ping-pong run visits: 0..N-1, then back N-2..0 (2N-1 outputs)."""
    if frames < 2:
        raise ValueError("the ping-pong loss needs clips of at least 2 frames")
    return list(range(frames)) + list(range(frames - 2, -1, -1))


def pingpong(outputs: Tensor, frames: int, kind: str = "l1") -> Tensor:
    """TecoGAN's ping-pong loss for a frame-recurrent generator.

    ``outputs`` (B, 2N-1, C, H, W): the generator's outputs over a clip of ``frames`` = N frames run in
    :func:`pingpong_order`. The loss is the mean distance (L1, TecoGAN's; or L2) between the forward
    and the backward estimate of frames 0..N-2: the backward pass saw the clip's future first, so a
    generator that invents detail from its state and lets it drift gives them different outputs, one
    that does not depend on its previous output gives exactly 0."""
    assert outputs.shape[1] == 2 * frames - 1, (outputs.shape, frames)
    forward = outputs[:, :frames - 1]
    backward = outputs[:, frames:].flip(1)  # frames N-2..0 -> 0..N-2
    return pixel(forward.float(), backward.float(), kind)


def temporal(outputs: Tensor, targets: Tensor, kind: str = "l1") -> Tensor:
    """The flicker loss: each output's change from the output before it, motion-compensated, against the
    ground truth's change over the same step. ``outputs``, ``targets`` (B, T, C, H, W) in visiting order.
    The motion is measured on the ground truth (DIS optical flow) and warps both the previous output and
    the previous ground truth, so an error that moves with the picture costs nothing and one that
    flickers costs its change; a per-frame model is scored on what tOF and the warping error measure."""
    terms = []
    for t in range(1, outputs.shape[1]):
        flow = lr_flow(targets[:, t], targets[:, t - 1])
        terms.append(pixel(outputs[:, t] - warp(outputs[:, t - 1], flow),
                           targets[:, t] - warp(targets[:, t - 1], flow), kind))
    return torch.stack(terms).mean()
