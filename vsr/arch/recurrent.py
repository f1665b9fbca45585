"""Frame-recurrent ESRGAN generator (FRVSR / TecoGAN style) on the RRDBNet trunk.

Each frame's input is the low-resolution frame plus the space-to-depth (``pixel_unshuffle`` by the
scale) of the previous output, warped onto the current frame by the motion between the previous and
the current low-resolution frame; the first frame of a shot has none (as if zeros). The motion is
OpenCV's DIS optical flow on the grey LR frames, refined down to their own pixels
(``benchmarks/bench_motion.py`` measured it against Farneback, DIS's presets and no motion: the lowest
warping error on real footage and on the training clips' virtual camera), upscaled to HR and
multiplied by the scale. It has no weights, so the network's weights are the RRDB's alone.

Weights and names are RRDBNet's (BasicSR layout) plus two parts for the previous output:

- ``conv_prev`` (no bias) takes the warped previous output's ``out_ch * scale**2 * unshuffle**2``
  channels (space-to-depth, pixel-unshuffled again as the x2 and x1 trunks need); its features are added
  to ``conv_first``'s of the LR frame, so the trunk can draw detail from the previous frame.
- ``gate``, two small convolutions at the LR frame's size over the frame and the space-to-depth of (warped
  previous output - the trunk's output), gives each output pixel a weight g in [0, 1], and the output is
  ``y + g * (warped - y)``: where the motion holds, the previous output's detail carries over instead of
  being invented again (flicker); where it fails (occlusions, new content) the two disagree and g can
  close. On the validation clips of pipelines/finetune-esrgan-temporal.yml, blending esrgan's output
  with its warped previous output at a constant 0.5 gives +0.44 dB PSNR-Y, tOF -22% and warping error
  -77% (benchmarks/bench_temporal_blend.py); the gate learns where and how much.

:func:`from_rrdb_state_dict` adds both to a single-frame RRDB's weights with ``conv_prev`` and the gate's
last convolution zero, so the recurrent network starts out as exactly that RRDB (bit for bit) whatever the
previous output is; training then teaches it to use the previous frame. The new parts can train at their
own learning rate (a recipe's ``optimizer.lr_mult``).

The call follows the engine's "recurrent" contract: ``model(x, prev_x, prev_y) -> y``, prev_x and
prev_y the previous frame's (padded) input and output, None after a reset.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .rrdb import RRDBNet

CONTEXT_FRAMES = 5  # warm-up frames that rebuild the state before a segment's first frame
GATE_FEATURES = 32
MIN_FLOW_SIDE = 12  # DIS needs a side of at least this many pixels; smaller frames get no motion


def grey_u8(x: torch.Tensor) -> np.ndarray:
    """(B, C, h, w) in [0, 1] -> (B, h, w) uint8 luma (BT.601 weights), what the flow is computed on."""
    x = x.detach().float().clamp(0, 1)
    if x.shape[1] == 3:
        x = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    else:
        x = x[:, 0]
    return (x * 255).round().to(torch.uint8).cpu().numpy()


# DIS settings by name: (OpenCV preset, finest pyramid level or None for the preset's). "dis", the one
# the network uses, refines down to the LR frame's own pixels (level 0): LR frames are small, and
# benchmarks/bench_motion.py found it the lowest warping error on every source it measured
DIS = {"dis": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, 0),
       "dis-medium": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, None),
       "dis-fast": (cv2.DISOPTICAL_FLOW_PRESET_FAST, None),
       "dis-ultrafast": (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, None)}
MOTION_METHODS = (*DIS, "farneback", "none")


def estimate_flow(cur: np.ndarray, prev: np.ndarray, method: str = "dis") -> np.ndarray:
    """Backward optical flow between two (h, w) uint8 grey frames: (h, w, 2) float32 (dx, dy) pixels such
    that ``cur[p] ~ prev[p + flow[p]]``. ``method``: one of ``MOTION_METHODS`` ("farneback" with
    TecoGAN's tOF settings, "none" for zero motion)."""
    h, w = cur.shape
    if method == "none" or max(h, w) < MIN_FLOW_SIDE:
        return np.zeros((h, w, 2), np.float32)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    if method not in DIS:
        raise ValueError(f"unknown motion method {method!r}; expected one of {', '.join(MOTION_METHODS)}")
    preset, finest = DIS[method]
    dis = cv2.DISOpticalFlow_create(preset)
    if finest is not None:
        dis.setFinestScale(finest)
    return dis.calc(cur, prev, None)


def lr_flow(x: torch.Tensor, prev_x: torch.Tensor, method: str = "dis") -> torch.Tensor:
    """Motion from ``prev_x`` to ``x`` (B, C, h, w): (B, 2, h, w) float32 on x's device, for warping the
    previous frame onto the current one (see :func:`warp`)."""
    cur, prev = grey_u8(x), grey_u8(prev_x)
    flows = np.stack([estimate_flow(c, p, method) for c, p in zip(cur, prev)])  # (B, h, w, 2)
    return torch.from_numpy(flows).permute(0, 3, 1, 2).to(x.device)


def upscale_flow(flow: torch.Tensor, scale: int) -> torch.Tensor:
    """LR flow (B, 2, h, w) -> HR flow (B, 2, h*s, w*s): resampled at the HR pixel centres and in HR pixels."""
    if scale == 1:
        return flow
    return F.interpolate(flow, scale_factor=scale, mode="bilinear", align_corners=False) * scale


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[p] = img[p + flow[p]]``, bilinear, the border repeated outside the frame.
    img (B, C, H, W), flow (B, 2, H, W) in pixels (dx, dy). The four neighbours are gathered by integer
    index (not grid_sample's normalised coordinates), so an integer flow moves pixels exactly."""
    b, c, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device, dtype=torch.float32),
                            torch.arange(w, device=img.device, dtype=torch.float32), indexing="ij")
    x = (xs + flow[:, 0].float()).clamp(0, w - 1)  # (B, H, W)
    y = (ys + flow[:, 1].float()).clamp(0, h - 1)
    x0, y0 = x.floor(), y.floor()
    ax, ay = (x - x0)[:, None], (y - y0)[:, None]  # (B, 1, H, W) weights of the right / lower neighbours
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    flat = img.float().reshape(b, c, h * w)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (yy * w + xx).reshape(b, 1, h * w).expand(b, c, h * w)).reshape(b, c, h, w)

    top = at(y0, x0) * (1 - ax) + at(y0, x1) * ax
    bottom = at(y1, x0) * (1 - ax) + at(y1, x1) * ax
    return (top * (1 - ay) + bottom * ay).to(img.dtype)


def _gate(ch: int, scale: int, generator: torch.Generator | None = None) -> nn.Sequential:
    """The blend weight's network: [LR frame, space-to-depth of (warped - output)] -> scale**2 weights per
    LR pixel (pixel-shuffled to one per output pixel). The last convolution starts at zero: no blend."""
    gate = nn.Sequential(nn.Conv2d(ch + ch * scale ** 2, GATE_FEATURES, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(GATE_FEATURES, scale ** 2, 3, 1, 1))
    nn.init.kaiming_uniform_(gate[0].weight, a=0.2, generator=generator)
    nn.init.zeros_(gate[0].bias)
    nn.init.zeros_(gate[2].weight)
    nn.init.zeros_(gate[2].bias)
    return gate


class RecurrentRRDBNet(RRDBNet):
    """RRDBNet whose input is the LR frame plus its previous output warped by the LR motion, and whose
    output blends in that warped output where a learnt gate trusts it."""

    def __init__(self, *, in_ch: int = 3, out_ch: int = 3, nf: int = 64, nb: int = 23,
                 gc: int = 32, scale: int = 4) -> None:
        super().__init__(in_ch=in_ch, out_ch=out_ch, nf=nf, nb=nb, gc=gc, scale=scale)
        if in_ch != out_ch:
            raise ValueError(f"a recurrent RRDBNet feeds its output back: in_ch must equal out_ch, "
                             f"got {in_ch} and {out_ch}")
        self.out_ch = out_ch
        self.motion = "dis"
        self.conv_prev = nn.Conv2d(prev_in_channels(out_ch, scale), nf, 3, 1, 1, bias=False)
        self.gate = _gate(out_ch, scale)

    def previous(self, x: torch.Tensor, prev_x: torch.Tensor | None, prev_y: torch.Tensor) -> torch.Tensor:
        """The previous output warped onto this frame: (B, out_ch, h * s, w * s)."""
        h, w = x.shape[-2:]
        s = self.scale
        assert prev_y.shape[-2:] == (h * s, w * s), (prev_y.shape, x.shape)
        if prev_x is None:  # no previous input to measure motion against: take it as still
            return prev_y.to(x.dtype)
        return warp(prev_y, upscale_flow(lr_flow(x, prev_x, self.motion), s)).to(x.dtype)

    def forward(self, x: torch.Tensor, prev_x: torch.Tensor | None = None,
                prev_y: torch.Tensor | None = None) -> torch.Tensor:  # (B, C, H, W) -> (B, C, sH, sW)
        # the frame's features are exactly the single-frame RRDB's; the previous output's (zero weights
        # at first) add exactly nothing until trained, and the gate starts closed
        u, s = self.unshuffle, self.scale
        feat = self.conv_first(F.pixel_unshuffle(x, u) if u > 1 else x)
        warped = None
        if prev_y is not None:
            warped = self.previous(x, prev_x, prev_y)
            prev = F.pixel_unshuffle(warped, s)
            feat = feat + self.conv_prev(F.pixel_unshuffle(prev, u) if u > 1 else prev)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        y = self.conv_last(self.lrelu(self.conv_hr(feat)))
        if warped is None:
            return y
        diff = warped - y
        z = F.pixel_shuffle(self.gate(torch.cat([x, F.pixel_unshuffle(diff, s)], 1)), s)  # (B, 1, sH, sW)
        # clamped to [0, 1], with the gradient of z itself (straight through): clamp's gradient is 0 at
        # its bounds, where the closed gate starts, so it would never open
        g = z - (z - z.clamp(0, 1)).detach()
        return y + g * diff  # (B, C, sH, sW)


def prev_in_channels(ch: int, scale: int) -> int:
    return ch * scale ** 2 * (4 // scale) ** 2


def params_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, int] | None:
    """Constructor arguments of a BasicSR-layout state dict with the recurrent ``conv_prev`` (the
    previous output's space-to-depth); None for any other RRDBNet."""
    keys = ("conv_first.weight", "conv_prev.weight", "gate.0.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")
    if any(k not in sd for k in keys):
        return None
    nf, prev_in = sd["conv_prev.weight"].shape[:2]
    out_ch = sd["conv_last.weight"].shape[0]
    for scale in (4, 2, 1):
        frame_in = out_ch * (4 // scale) ** 2
        if prev_in == prev_in_channels(out_ch, scale) and sd["conv_first.weight"].shape[1] == frame_in:
            nb = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
            gc = sd["body.0.rdb1.conv1.weight"].shape[0]
            return {"in_ch": out_ch, "out_ch": out_ch, "nf": nf, "nb": nb, "gc": gc, "scale": scale}
    return None


def from_rrdb_state_dict(sd: dict[str, torch.Tensor], *, scale: int) -> dict[str, torch.Tensor]:
    """A single-frame RRDBNet's state dict (BasicSR layout) for :class:`RecurrentRRDBNet`: conv_prev
    (the previous output's) is zero and the gate closed, so the output does not change. The gate's first
    convolution is drawn from a fixed seed, so the same RRDB always gives the same recurrent weights."""
    w = sd["conv_first.weight"]  # (nf, in_ch * u * u, 3, 3)
    out_ch = sd["conv_last.weight"].shape[0]
    gate = _gate(out_ch, scale, torch.Generator().manual_seed(0)).to(w.dtype)
    return {**sd, "conv_prev.weight": w.new_zeros(w.shape[0], prev_in_channels(out_ch, scale), *w.shape[2:]),
            **{f"gate.{k}": v.to(w.device) for k, v in gate.state_dict().items()}}
