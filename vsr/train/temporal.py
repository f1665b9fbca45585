"""A generator over training clips, and the losses of a clip batch.

The generator runs frame by frame as ``vsr upscale``'s engine runs it (the recurrent contract): each
step gets the frame, the previous frame and its own previous output (the first frame none, as after a
scene cut), and the architecture measures the motion between the two frames itself. Gradients flow
back through the recurrence, so the network learns what its previous output is worth. With a ping-pong
loss active the run goes forward and back (frames 0..N-1..0) and every output meets its ground truth;
a plain (single-frame) generator simply runs on each frame.
"""
from __future__ import annotations

import torch
from torch import nn

from . import ddp, losses
from .config import RecipeConfig

Tensor = torch.Tensor


def visit_order(frames: int, pingpong: bool) -> list[int]:
    """The frames a run visits: 0..N-1, and back N-2..0 for the ping-pong loss."""
    return losses.pingpong_order(frames) if pingpong else list(range(frames))


class ClipRunner(nn.Module):
    """``net`` over a batch of clips in one call, so that DDP sees one forward pass per backward pass
    (the recurrent network is called once per frame)."""

    def __init__(self, *, net: nn.Module, recurrent: bool) -> None:
        super().__init__()
        self.net, self.recurrent = net, recurrent

    def forward(self, lq: Tensor, pingpong: bool = False) -> Tensor:  # (B, T, C, h, w) -> (B, T', C, sh, sw)
        prev_x = prev_y = None
        outs = []
        for t in visit_order(lq.shape[1], pingpong):
            x = lq[:, t].contiguous(memory_format=torch.channels_last)
            if self.recurrent:
                y = self.net(x, prev_x, prev_y)
                prev_x, prev_y = x, y
            else:
                y = self.net(x)
            outs.append(y)
        return torch.stack(outs, 1)


def fold(clips: Tensor) -> Tensor:
    """(B, T, C, H, W) -> (B, T * C, H, W): a clip as one image of many channels, so the patch-wise
    helpers (corner crops, shared regions) cut every frame the same way."""
    return clips.reshape(clips.shape[0], -1, *clips.shape[-2:])


def unfold(images: Tensor, channels: int) -> Tensor:
    """The inverse of :func:`fold`."""
    return images.reshape(images.shape[0], -1, channels, *images.shape[-2:])


def clip_terms(cfg: RecipeConfig, active: list[str], runner: nn.Module, mb: dict[str, Tensor],
               vgg: dict[str, losses.VGGFeatures], wrapped: dict[str, nn.Module],
               fakes: dict[int, tuple[Tensor, Tensor]], m: int) -> dict[str, Tensor]:
    """The weighted loss terms of the generator's training step on one micro-batch of clips: lq
    (B, T, C, p, p), hq (B, T, C, sp, sp). The translational loss runs the clips cropped at two corners
    and compares every frame's shared region; pixel, perceptual and GAN losses score every output."""
    lq, hq = mb["lq"], mb["hq"]
    n, c = lq.shape[1], hq.shape[2]
    pp = next((k for k in active if cfg.losses[k].type == "pingpong"), None)
    order = visit_order(n, pp is not None)
    target = hq[:, order]  # (B, T', C, sp, sp)
    terms: dict[str, Tensor] = {}
    trans = next((k for k in active if cfg.losses[k].type == "translational"), None)
    if trans:
        crop = cfg.losses[trans].crop or cfg.data.patch * 3 // 4

        def generator(z: Tensor) -> Tensor:  # folded crops -> folded outputs
            return fold(runner(unfold(z, lq.shape[2]), pingpong=pp is not None))

        out, t = losses.translational(generator, fold(lq), mb["corner"], mb["corner_b"], crop=crop,
                                      scale=cfg.scale)
        out = unfold(out, c)
        target = unfold(losses.target_crop(fold(target), mb["corner"], patch=cfg.data.patch, crop=crop,
                                           scale=cfg.scale), c)
        terms[trans] = cfg.losses[trans].weight * t
    else:
        out = runner(lq, pingpong=pp is not None)
    out = out.float()
    frames_out, frames_target = out.flatten(0, 1), target.flatten(0, 1)  # (B * T', C, H, W)
    for name in active:
        loss = cfg.losses[name]
        if loss.type in ("l1", "l2"):
            terms[name] = loss.weight * losses.pixel(out, target, loss.type)
        elif loss.type == "pingpong":
            terms[name] = loss.weight * losses.pingpong(out, n, loss.distance or "l1")
        elif loss.type == "temporal":
            terms[name] = loss.weight * losses.temporal(out, target, loss.distance or "l1")
        elif loss.type == "perceptual" and name in vgg:
            terms[name] = loss.weight * losses.perceptual(vgg[name], frames_out, frames_target)
        elif loss.type == "gan":
            d = ddp.unwrap(wrapped[loss.discriminator or ""])
            terms[name] = loss.weight * losses.gan_g_loss(d, frames_target, frames_out,
                                                          kind=loss.gan_type or "vanilla")
    fakes[m] = (frames_target, frames_out.detach())
    return terms
