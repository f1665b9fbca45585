"""Tiled inference: any tile size, overlap and frame shape gives the untiled result of a network whose
context is shorter than the overlap's weight-0 margin, and the seams cross-fade linearly."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vsr.engine.tiling import _ramp, tile_count, tile_starts, tiled


def blur_up(radius: int, scale: int):
    """A network with `radius` pixels of context: a box blur with zero padding (so a tile's border pixels
    differ from the whole image's), then nearest-neighbour upscaling."""
    def fn(part: torch.Tensor, origin: tuple[int, int], n: int) -> torch.Tensor:
        k = 2 * radius + 1
        c = part.shape[1]
        y = F.conv2d(part, torch.ones(c, 1, k, k) / k ** 2, padding=radius, groups=c)
        return y.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    return fn


@pytest.mark.parametrize("h, w, tile, overlap, scale, align, radius", [
    (8, 100, 32, 8, 2, 1, 1),  # short and wide: one row of tiles, each as tall as the frame
    (100, 8, 32, 8, 2, 1, 1),  # tall and narrow
    (37, 53, 13, 6, 3, 1, 2),  # tile size no multiple of anything, a short last tile
    (40, 44, 16, 5, 1, 2, 1),  # aligned starts: a shorter step than without alignment
    (52, 36, 20, 7, 2, 4, 1),
    (33, 33, 32, 4, 2, 1, 1),  # one pixel more than a tile: the last tile overlaps almost all of the first
    (30, 70, 24, 40, 2, 1, 1),  # an overlap larger than half a tile is cut to half a tile
    (49, 20, 32, 16, 2, 1, 1),  # three tiles over some rows (starts 0, 16, 17): weights do not sum to 1
])
def test_tiled_equals_untiled(h, w, tile, overlap, scale, align, radius):
    torch.manual_seed(0)
    x = torch.rand(2, 3, h, w)
    fn = blur_up(radius, scale)
    calls = []

    def recorded(part, origin, n):
        y0, x0 = origin
        assert torch.equal(part, x[:, :, y0:y0 + part.shape[2], x0:x0 + part.shape[3]])
        assert y0 % align == 0 and x0 % align == 0
        assert part.shape[2] <= tile and part.shape[3] <= tile  # memory is bounded by the tile size
        calls.append(n)
        return fn(part, origin, n)

    out = tiled(recorded, x, tile=tile, overlap=overlap, scale=scale, align=align)
    assert calls == list(range(tile_count(h, w, tile=tile, overlap=overlap, align=align))) and len(calls) > 1
    assert out.dtype == torch.float32 and out.shape == (2, 3, h * scale, w * scale)
    assert (out - fn(x, (0, 0), 0)).abs().max() < 1e-5


def test_overlap_beyond_half_a_tile_is_half_a_tile():
    x = torch.rand(1, 3, 40, 60)
    fn = blur_up(1, 2)
    wide = tiled(fn, x, tile=16, overlap=15, scale=2)
    assert torch.equal(wide, tiled(fn, x, tile=16, overlap=8, scale=2))
    assert not torch.equal(wide, tiled(fn, x, tile=16, overlap=6, scale=2))
    halves = len(tile_starts(40, 16, 8)) * len(tile_starts(60, 16, 8))
    unclamped = len(tile_starts(40, 16, 15)) * len(tile_starts(60, 16, 15))
    assert tile_count(40, 60, tile=16, overlap=15) == halves < unclamped


def test_one_tile_is_the_network_output_itself():
    """A frame no larger than a tile (or tile 0) goes through in one call, the output untouched."""
    seen = []

    def half(part, origin, n):
        seen.append((tuple(part.shape), origin, n))
        return part.half() * 2

    for h, w in ((16, 12), (12, 16)):
        x = torch.rand(1, 3, h, w)
        seen.clear()
        for tile in (0, 16, 64):
            out = tiled(half, x, tile=tile, overlap=4, scale=1)
            assert out.dtype == torch.float16 and torch.equal(out, x.half() * 2)
            assert tile_count(h, w, tile=tile, overlap=4) == 1
        assert seen == [((1, 3, h, w), (0, 0), 0)] * 3
    many = tiled(half, torch.rand(1, 3, 16, 40), tile=16, overlap=4, scale=1)
    assert many.dtype == torch.float32 and many.device.type == "cpu"


def test_seams_cross_fade_linearly():
    """Each tile paints its own number: outside overlaps a pixel is its tile's, and across an overlap the
    weight moves from one tile to the next as the ramp says, the outer 3/8 at each tile's edge ignored."""
    h, w, tile, overlap, scale = 8, 71, 24, 8, 1  # overlaps of 8 and 9 pixels, no pixel in three tiles
    xs = tile_starts(w, tile, overlap)
    row = tiled(lambda part, origin, n: torch.full_like(part, float(n)), torch.zeros(1, 1, h, w),
                tile=tile, overlap=overlap, scale=scale)[0, 0]
    assert torch.equal(row, row[:1].expand(h, w))  # one row of tiles: every row alike
    row = row[0]
    for i, (a, b) in enumerate(zip(xs, xs[1:])):
        v = a + tile - b  # this seam's overlap, from b to a + tile
        assert torch.allclose(row[b:b + v], i + _ramp(v, v, 0)[:v], atol=1e-6)
        lo = xs[i - 1] + tile if i else 0
        assert torch.all(row[lo:b] == i)  # only tile i covers these
    assert torch.all(row[xs[-2] + tile:] == len(xs) - 1)


@pytest.mark.parametrize("v", [1, 2, 3, 5, 8, 13, 16, 24, 31])
def test_ramp_weights_sum_to_one_across_an_overlap(v):
    length = 40
    left, right = _ramp(length, 0, v), _ramp(length, v, 0)  # the tile before and the tile after a seam
    assert torch.allclose(left[length - v:] + right[:v], torch.ones(v), atol=1e-6)
    assert torch.all(left[:length - v] == 1) and torch.all(right[v:] == 1)
    margin = 3 * v // 8
    ramp = right[:v]
    assert torch.all(ramp[:margin] == 0) and torch.all(ramp[v - margin:] == 1)
    middle = ramp[margin:v - margin]
    assert torch.all((middle > 0) & (middle < 1))
    steps = middle[1:] - middle[:-1]
    assert torch.allclose(steps, torch.full_like(steps, 1 / len(middle)), atol=1e-6)  # linear
    both = _ramp(length, v, v)
    assert torch.equal(both, right * left)


def test_ramp_without_neighbours_is_flat():
    assert torch.equal(_ramp(9, 0, 0), torch.ones(9))


@pytest.mark.parametrize("length, tile, overlap, align", [
    (100, 32, 8, 1), (101, 32, 8, 4), (33, 32, 8, 2), (35, 32, 8, 2), (200, 48, 16, 8), (64, 20, 19, 1),
    (90, 12, 11, 4),
])
def test_tile_starts_are_evenly_spaced_and_aligned(length, tile, overlap, align):
    starts = tile_starts(length, tile, overlap, align)
    stride = max(align, (tile - overlap) // align * align)  # the largest aligned step keeping the overlap
    assert starts[0] == 0 and all(s % align == 0 for s in starts)
    assert [b - a for a, b in zip(starts, starts[1:-1])] == [stride] * max(len(starts) - 2, 0)
    assert len(starts) == 1 or 0 < starts[-1] - starts[-2] <= stride
    assert starts[-1] == (length - tile) // align * align  # the last tile ends at the edge (within align)
    assert length - align < starts[-1] + tile <= length


def test_tile_starts_of_a_short_side():
    assert tile_starts(32, 32, 8) == tile_starts(5, 32, 8, 4) == [0]
    assert tile_starts(33, 32, 8) == [0, 1]
    assert tile_count(8, 100, tile=32, overlap=8) == len(tile_starts(100, 32, 8)) == 4
    assert tile_count(8, 100, tile=32, overlap=9) == len(tile_starts(100, 32, 9)) < len(tile_starts(100, 32, 9, 2))
    assert tile_count(100, 8, tile=32, overlap=8, align=4) == len(tile_starts(100, 32, 8, 4))
    assert tile_count(100, 100, tile=0, overlap=8) == 1
