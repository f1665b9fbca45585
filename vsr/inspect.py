"""``vsr inspect selectors IMAGE --model switched -o maps.png``: which kernel each switched layer chose at
every pixel, one colour per kernel, beside the input."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from . import zoo
from .arch.switched import SwitchedConv2d
from .errors import VsrError
from .images import read_image, to_rgb8, write_image

# distinct colours for up to 16 kernels (more wrap around)
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
                    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (0, 0, 128)], np.uint8)


@torch.no_grad()
def selector_maps(model: torch.nn.Module, img: np.ndarray) -> list[np.ndarray]:
    """(H, W, 3) uint8 -> one (h, w) int map of chosen kernels per switched layer, in network order."""
    layers = [m for m in model.modules() if isinstance(m, SwitchedConv2d)]
    if not layers:
        raise VsrError("the model has no switched layers: give a switched model (--model switched)")
    maps: list[np.ndarray] = []

    def hook(layer, inputs, _output):
        maps.append(layer.routing(inputs[0])[0][0].cpu().numpy())

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255)
        model.eval()(x.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return maps


def sheet(img: np.ndarray, maps: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """The input, then each layer's map in colour, in a grid with 4-pixel gaps."""
    h, w = img.shape[:2]
    tiles = [img] + [PALETTE[m % len(PALETTE)] for m in maps]
    tiles = [cv2.resize(t, (w, h), interpolation=cv2.INTER_NEAREST) for t in tiles]  # strided layers' maps
    rows = -(-len(tiles) // columns)
    cols = min(columns, len(tiles))
    out = np.full((rows * (h + 4) - 4, cols * (w + 4) - 4, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + 4):r * (h + 4) + h, c * (w + 4):c * (w + 4) + w] = t
    return out


def run(args) -> int:
    if not args.image.is_file():
        raise VsrError(f"{args.image}: no such image")
    if args.output.resolve() == args.image.resolve():
        raise VsrError(f"{args.output}: the output would overwrite the input; give another -o")
    desc, _ = zoo.resolve(args.model)
    img = to_rgb8(read_image(args.image))
    maps = selector_maps(desc.model, img)
    write_image(args.output, sheet(img, maps))
    used = sorted({int(k) for m in maps for k in np.unique(m)})
    print(f"vsr: {len(maps)} switched layers; kernels in use: {used}; written {args.output}")
    return 0
