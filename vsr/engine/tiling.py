"""Tiled inference with overlap and seamless (linear cross-fade) blending.

Memory is bounded by the tile size whatever the input size; tiles are cut at the same place in every
image of a batch, so a batch of video frames goes through the network tile by tile as a batch.
"""
from __future__ import annotations

from typing import Callable

import torch

# fn(part (B, C, h, w), (y0, x0) of the part in the input, tile number) -> (B, C', h*scale, w*scale)
TileFn = Callable[[torch.Tensor, tuple[int, int], int], torch.Tensor]


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start of each tile; starts are multiples of ``align`` so that a network that works on
    ``align``-pixel cells (pixel unshuffle) sees the same cells as on the whole image."""
    if length <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    last = (length - tile) // align * align
    return list(range(0, last, stride)) + [last]


def tile_count(h: int, w: int, *, tile: int, overlap: int, align: int = 1) -> int:
    """How many tiles :func:`tiled` computes for an h x w input (1: the whole image at once)."""
    if not tile or (h <= tile and w <= tile):
        return 1
    overlap = min(overlap, tile // 2)
    return len(tile_starts(h, tile, overlap, align)) * len(tile_starts(w, tile, overlap, align))


def _ramp(length: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """Weights along one axis of a tile. Where a neighbour overlaps by ``v`` pixels, the outer 3/8 of
    the overlap (nearest this tile's edge, where missing context makes it least accurate) gets weight
    0, the middle quarter a linear ramp, so the two tiles' weights sum to 1 across the overlap."""
    w = torch.ones(length)
    for v, flip in ((fade_in, False), (fade_out, True)):
        if not v:
            continue
        margin = 3 * v // 8
        r = v - 2 * margin
        edge = torch.cat([torch.zeros(margin), (torch.arange(r) + 0.5) / r, torch.ones(margin)])
        if flip:
            w[length - v:] = w[length - v:] * edge.flip(0)
        else:
            w[:v] = w[:v] * edge
    return w


def tiled(fn: TileFn, x: torch.Tensor, *, tile: int, overlap: int, scale: int, align: int = 1) -> torch.Tensor:
    """Apply ``fn`` over tiles of ``x`` (B, C, H, W) and blend the parts into (B, C', H*scale, W*scale).

    ``x`` must already be a multiple of ``align`` in size, so every tile is too. Returns ``fn``'s own
    output for a single tile, else a float32 CPU tensor."""
    b, _, h, w = x.shape
    if not tile or (h <= tile and w <= tile):
        return fn(x, (0, 0), 0)
    overlap = min(overlap, tile // 2)
    ys, xs = tile_starts(h, tile, overlap, align), tile_starts(w, tile, overlap, align)
    out = weight = None
    n = 0
    for y0 in ys:
        for x0 in xs:
            # the last tile of a row or column runs to the image edge
            th = (h - y0) if y0 == ys[-1] else min(tile, h)
            tw = (w - x0) if x0 == xs[-1] else min(tile, w)
            # the full-size result is assembled in host memory, so device memory stays bounded
            part = fn(x[:, :, y0:y0 + th, x0:x0 + tw], (y0, x0), n).float().cpu()
            n += 1
            if out is None:
                out = torch.zeros(b, part.shape[1], h * scale, w * scale)
                weight = torch.zeros(1, 1, h * scale, w * scale)
            # cross-fade only where a neighbouring tile covers the same pixels
            top = (ys[ys.index(y0) - 1] + min(tile, h) - y0) * scale if y0 > 0 else 0
            left = (xs[xs.index(x0) - 1] + min(tile, w) - x0) * scale if x0 > 0 else 0
            bottom = (y0 + th - ys[ys.index(y0) + 1]) * scale if y0 != ys[-1] else 0
            right = (x0 + tw - xs[xs.index(x0) + 1]) * scale if x0 != xs[-1] else 0
            win = _ramp(th * scale, top, bottom)[:, None] * _ramp(tw * scale, left, right)[None, :]
            sy, sx = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
            out[:, :, sy, sx] += part * win
            weight[:, :, sy, sx] += win
    return out / weight
