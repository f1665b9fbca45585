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

from . import loss_types, losses
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
               wrapped: dict[str, nn.Module], fakes: dict[int, tuple[Tensor, Tensor]], m: int,
               fixed: dict[str, nn.Module]) -> dict[str, Tensor]:
    """The weighted loss terms of the generator's training step on one micro-batch of clips: lq
    (B, T, C, p, p), hq (B, T, C, sp, sp). The translational loss runs the clips cropped at two corners
    and compares every frame's shared region; pixel, perceptual and GAN losses score every output."""
    lq, hq = mb["lq"], mb["hq"]
    n, c = lq.shape[1], hq.shape[2]
    pp = next((k for k in active if cfg.losses[k].type == "pingpong"), None)
    order = visit_order(n, pp is not None)
    target = hq[:, order]  # (B, T', C, sp, sp)
    made: dict[str, Tensor] = {}
    trans = next((k for k in active if cfg.losses[k].type == "translational"), None)
    if trans:
        def generator(z: Tensor) -> Tensor:  # folded crops -> folded outputs
            return fold(runner(unfold(z, lq.shape[2]), pingpong=pp is not None))

        out, t, cut = loss_types.get("translational").generate(generator, fold(lq), mb, loss=cfg.losses[trans],
                                                               patch=cfg.data.patch, scale=cfg.scale)
        out, target = unfold(out, c), unfold(cut(fold(target)), c)
        made[trans] = cfg.losses[trans].weight * t
    else:
        out = runner(lq, pingpong=pp is not None)
    scene = loss_types.Scene(lq=lq, target=target, mb=mb, net=runner, nets=wrapped, make_out=lambda: out, frames=n)
    # (B * T', C, H, W): every frame an image to judge, made before the terms (the graph's order, and so
    # the order its gradients are summed in, stays as it was)
    frames_out, frames_target = scene.images()
    terms = loss_types.terms(cfg, active, scene, fixed, made)
    fakes[m] = (frames_target, frames_out.detach())
    return terms
