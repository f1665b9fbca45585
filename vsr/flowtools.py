"""What a conditional flow does besides super-resolution (``vsr srflow restore|transfer``).

Both treat the given image as the high-resolution one: its low-resolution version is its antialiased
bicubic downscale by the model's scale, so encoding (image, downscale) gives the image's latents.

- restore: each latent channel normalised to zero mean and unit standard deviation, then decoded with
  the same downscale. Damage the flow never learnt (noise, compression) shows as latents that are not
  Gaussian; normalising them pulls the picture back towards what the model finds likely.
- transfer: image A's latents decoded with image B's downscale: B's content with A's fine texture.
"""
from __future__ import annotations

import sys


import numpy as np
import torch
import torch.nn.functional as F

from . import zoo
from .arch import Contract, ModelDescriptor
from .engine.device import select_device
from .engine.upscaler import usable
from .errors import VsrError
from .images import read_image, to_rgb8, write_image


def load_flow(model: str) -> ModelDescriptor:
    desc, _ = zoo.resolve(model)
    if not callable(getattr(desc.model, "encode", None)) or desc.contract != Contract.SAMPLED:
        raise VsrError(f"model {model!r} is a {desc.arch} network, not a flow: give an SRFlow model (--model srflow)")
    return desc


def _block(desc: ModelDescriptor) -> int:
    """HR sizes must be a multiple of this: the scale times the LR size multiple."""
    return int(desc.scale) * desc.size_multiple


def _pair(img: np.ndarray, desc: ModelDescriptor, size: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8 -> HR (1, 3, h, w) cropped at the centre to ``size``, and its LR."""
    h, w = size
    y, x = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    hr = torch.from_numpy(np.ascontiguousarray(img[y:y + h, x:x + w])).permute(2, 0, 1)[None].float().div(255)
    lr = F.interpolate(hr, scale_factor=1 / desc.scale, mode="bicubic", antialias=True, align_corners=False)
    return hr.to(device), lr.clamp(0, 1).to(device)


def _size(desc: ModelDescriptor, *imgs: np.ndarray) -> tuple[int, int]:
    b = _block(desc)
    h, w = (min(i.shape[0] for i in imgs) // b * b, min(i.shape[1] for i in imgs) // b * b)
    if h < b or w < b:
        raise VsrError(f"the image is too small for this flow: it needs at least {b}x{b} pixels")
    return h, w


def _to_image(t: torch.Tensor) -> np.ndarray:
    if not usable(t):
        raise VsrError("the flow's reverse pass blew up on this image (its latents are far from what it learnt)")
    return (t[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


RESTORE_STRENGTHS = (1.0, 0.5, 0.25, 0.125, 0.0625)


def normalise(latents: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each latent channel to zero mean and unit standard deviation over its pixels."""
    out = []
    for z in latents:
        mean = z.mean(dim=(2, 3), keepdim=True)
        std = z.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        out.append((z - mean) / std)
    return out


@torch.no_grad()
def restore(desc: ModelDescriptor, img: np.ndarray, device: str = "auto") -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> (the restored image, cropped to the flow's size multiple; the strength used)."""
    dev = select_device(device)
    model = desc.model.to(dev).eval().float()
    hr, lr = _pair(img, desc, _size(desc, img), dev)
    latents = model.encode(hr, lr)
    target = normalise(latents)
    # the reverse pass of a flow is fragile away from the latents it learnt: where the full normalisation
    # blows up (non-finite or far outside the picture's range), the latents move only part of the way
    for strength in RESTORE_STRENGTHS:
        out = model.reverse(lr, [z + strength * (t - z) for z, t in zip(latents, target)])
        if usable(out):
            return _to_image(out), strength
    raise VsrError(f"this picture's latents blow up in the flow's reverse pass even at {strength:g} of the "
                   "normalisation; the flow cannot restore it (try vsr upscale on its downscale instead)")


@torch.no_grad()
def transfer(desc: ModelDescriptor, a: np.ndarray, b: np.ndarray, device: str = "auto") -> np.ndarray:
    """A's latents decoded with B's downscale; both centre-cropped to their common size."""
    dev = select_device(device)
    model = desc.model.to(dev).eval().float()
    size = _size(desc, a, b)
    hr_a, lr_a = _pair(a, desc, size, dev)
    _, lr_b = _pair(b, desc, size, dev)
    return _to_image(model.reverse(lr_b, model.encode(hr_a, lr_a)))


def run(args) -> int:
    """``vsr srflow restore IMAGE -o OUT`` / ``vsr srflow transfer A B -o OUT``."""
    inputs = [args.image] if args.action == "restore" else [args.a, args.b]
    for p in inputs:
        if not p.is_file():
            raise VsrError(f"{p}: no such image")
    out = args.output
    if out.resolve() in {p.resolve() for p in inputs}:
        raise VsrError(f"{out}: the output would overwrite an input; give another -o")
    desc = load_flow(args.model)
    imgs = [to_rgb8(read_image(p)) for p in inputs]
    if args.action == "restore":
        result, strength = restore(desc, imgs[0], args.device)
        if strength < 1:
            print(f"vsr: latents moved {strength:g} of the way to normalised (further, the flow's reverse pass "
                  "blows up)", file=sys.stderr)
    else:
        result = transfer(desc, *imgs, args.device)
    write_image(out, result)
    return 0
