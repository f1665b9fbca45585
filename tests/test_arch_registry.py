"""What a network's descriptor promises the engine: sizes, channels, contract, the overlap that hides tile
seams and the memory that automatic tiling budgets; and the registry's checks of parameters."""
from __future__ import annotations

import dataclasses
import json
import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vsr import arch
from vsr.arch import recurrent
from vsr.engine import Upscaler

from conftest import TINY_CASES, tiny


def run(desc, x):
    if desc.contract == "sampled":
        return desc.model.reverse(x, [torch.zeros(x.shape[0], *s) for s in desc.model.latent_shapes(*x.shape[-2:])])
    if desc.contract == "recurrent":
        return desc.model(x, x, torch.zeros(x.shape[0], desc.out_ch, *(round(n * desc.scale) for n in x.shape[-2:])))
    return desc.model(x)


@pytest.mark.parametrize("name, params", TINY_CASES)
def test_descriptor_tells_the_networks_own_sizes(name, params):
    desc = tiny(name, **params)
    assert desc.arch == name and arch.get_arch(name).name == name
    assert desc.num_params == sum(p.numel() for p in desc.model.parameters()) > 0
    m = desc.size_multiple
    x = torch.rand(1, desc.in_ch, m, 2 * m)
    with torch.no_grad():
        y = run(desc, x)
    assert y.shape == (1, desc.out_ch, round(m * desc.scale), round(2 * m * desc.scale))
    assert isinstance(desc.bytes_per_px, int) and isinstance(desc.tile_overlap, int)
    assert desc.tile_overlap % m == 0 and desc.tile_overlap > 0
    if m > 1:  # one pixel off the multiple is not a size the network takes
        with pytest.raises(Exception), torch.no_grad():
            run(desc, torch.rand(1, desc.in_ch, m + 1, 2 * m))


def test_each_architectures_contract():
    by_name = {name: tiny(name, **params) for name, params in TINY_CASES}
    assert {n: (d.contract, d.tiling, d.settings, d.traceable, d.autocast) for n, d in by_name.items()} == {
        "rrdb": ("plain", "tiles", (), True, False),
        "rrdb-recurrent": ("recurrent", "tiles", (), True, False),
        "compact": ("plain", "tiles", (), True, False),
        "srflow": ("sampled", "latent", ("temperature", "seed"), True, True),
        "switched": ("plain", "tiles", (), False, False),
    }
    assert by_name["rrdb-recurrent"].context_frames == recurrent.CONTEXT_FRAMES
    assert all(d.context_frames == 0 for n, d in by_name.items() if n != "rrdb-recurrent")
    assert all(isinstance(d.contract, arch.Contract) and isinstance(d.tiling, arch.Tiling) for d in by_name.values())


def test_recurrent_rrdb_budgets_as_the_rrdb():
    for scale in (4, 2):
        plain = tiny("rrdb", nf=8, nb=1, gc=4, scale=scale)
        rec = tiny("rrdb-recurrent", nf=8, nb=1, gc=4, scale=scale)
        assert (rec.size_multiple, rec.tile_overlap, rec.bytes_per_px, rec.scale) == \
            (plain.size_multiple, plain.tile_overlap, plain.bytes_per_px, plain.scale)


def test_compact_scale_includes_its_output_scale():
    desc = tiny("compact", nf=8, num_conv=1, upscale=4, out_scale=0.75)
    assert desc.scale == 3.0 and desc.in_ch == desc.out_ch == 3


@pytest.mark.parametrize("name, params, smallest", [
    ("compact", dict(nf=8, num_conv=2, upscale=2), True), ("compact", dict(nf=8, num_conv=6, upscale=4), True),
    ("switched", dict(nf=8, num_conv=2, upscale=4, breadth=4), True), ("rrdb", dict(nf=8, nb=1, gc=4, scale=4), False)])
def test_the_descriptors_overlap_hides_every_seam(name, params, smallest):
    """Two tiles that share exactly the descriptor's overlap give the untiled output: its weight-0 margin is
    wider than what the network sees around a pixel. For the compact networks it is the smallest such
    overlap (a multiple of 8): one step less shows the seam."""
    desc = tiny(name, **params)
    m = desc.size_multiple
    tile = 2 * desc.tile_overlap + 8 * m

    def seam_error(overlap):
        x = torch.rand(1, 3, 2 * tile - overlap, 8 * m)  # two tiles, one above the other
        tiled = Upscaler(desc, tile=tile, overlap=overlap)
        assert tiled.tiles(*x.shape[-2:]) == 2
        return float((tiled(x) - Upscaler(desc, tile=0)(x)).abs().max())

    assert Upscaler(desc, tile=tile).overlap == desc.tile_overlap
    assert seam_error(desc.tile_overlap) < 1e-6
    if smallest:
        assert seam_error(desc.tile_overlap - 8 * m) > 1e-5


class LiveBytes(TorchDispatchMode):
    """The most bytes that tensors made inside the mode held at once (each storage counted once)."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, list[int]] = {}
        self.live = self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.refs[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            del self.refs[ptr]
            self.live -= entry[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                ptr = t.untyped_storage().data_ptr()
                if ptr not in self.refs:
                    self.refs[ptr] = [t.untyped_storage().nbytes(), 0]
                    self.live += self.refs[ptr][0]
                self.refs[ptr][1] += 1
                weakref.finalize(t, self._release, ptr)
        self.peak = max(self.peak, self.live)
        return out


@pytest.mark.parametrize("name, params, most", [("rrdb", dict(nf=16, nb=1, gc=8, scale=s), 3) for s in (4, 2, 1)] + [
    ("rrdb-recurrent", dict(nf=16, nb=1, gc=8, scale=4), 3), ("compact", dict(nf=16, num_conv=2, upscale=4), 3),
    ("compact", dict(nf=8, num_conv=1, upscale=2), 3), ("switched", dict(nf=8, num_conv=2, upscale=4, breadth=4), 3),
    ("srflow", dict(nf=8, nb=3, gc=4, K=1, hidden=8, cond_blocks=2), 1.5),
    ("srflow", dict(nf=16, nb=1, gc=8, K=2, hidden=16, cond_blocks=1, residual=True), 1.5),
    ("srflow", dict(scale=8, L=4, nf=8, nb=1, gc=4, K=1, hidden=8, cond_blocks=1, residual=True), 1.5)])
def test_memory_estimate_bounds_what_inference_holds(name, params, most, one_thread):
    """bytes_per_px sizes automatic tiles: it must not be much below the activations an fp32 inference really
    holds at once per input pixel (a tile would not fit), nor so far above that tiles come out needlessly
    small. SRFlow's estimate counts its buffers one by one, so it is closer; the others leave room."""
    desc = tiny(name, **params)
    side = 16 * desc.size_multiple
    x = torch.rand(1, 3, side, side)
    with torch.inference_mode(), LiveBytes() as live:
        run(desc, x)
    measured = live.peak / side ** 2
    assert 0.95 * measured <= desc.bytes_per_px <= most * measured


def test_recurrent_from_rrdb_starts_as_the_rrdb():
    desc = tiny("rrdb", nf=8, nb=1, gc=4, scale=2)
    desc.model.eval().requires_grad_(False)
    rec = arch.from_rrdb(desc)
    assert rec.arch == "rrdb-recurrent" and rec.params == desc.params
    x, prev = torch.rand(1, 3, 8, 10), torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        assert torch.allclose(rec.model(x, prev, torch.rand(1, 3, 16, 20)), desc.model(x), atol=1e-6)
    assert not rec.model.training and not any(p.requires_grad for p in rec.model.parameters())
    desc.model.train().requires_grad_(True)
    trainable = arch.from_rrdb(desc)
    assert trainable.model.training and all(p.requires_grad for p in trainable.model.parameters())


def test_recurrent_from_anything_else_is_refused():
    with pytest.raises(ValueError, match="expected a single-frame rrdb model, got compact"):
        arch.from_rrdb(tiny("compact", nf=8, num_conv=1, upscale=2))
    gray = arch.build("rrdb", nf=8, nb=1, gc=4, scale=4, in_ch=1, out_ch=3)
    with pytest.raises(ValueError, match="as many input as output channels"):
        arch.from_rrdb(gray)


@pytest.mark.parametrize("change, what", [
    (dict(contract="streamed"), "compact: contract: expected one of plain, sampled, recurrent, got 'streamed'"),
    (dict(tiling="rows"), "compact: tiling: expected one of tiles, latent, got 'rows'"),
    (dict(tiling="whole"), "compact: tiling: expected one of tiles, latent, got 'whole'"),
    (dict(settings=("speed",)), "compact: settings: expected some of temperature, seed, got 'speed'"),
    (dict(tiling="latent"), "compact: tiling latent: only sampled models have latents, this one is plain")])
def test_descriptor_refuses_what_the_engine_cannot_do(change, what):
    """Checked when the descriptor is built (not by assert: python -O keeps these checks)."""
    desc = tiny("compact", nf=8, num_conv=1, upscale=2)
    with pytest.raises(ValueError) as e:
        dataclasses.replace(desc, **change)
    assert str(e.value) == what


def test_contract_and_tiling_read_as_their_names():
    desc = dataclasses.replace(tiny("compact", nf=8, num_conv=1, upscale=2), contract="recurrent")
    assert desc.contract is arch.Contract.RECURRENT and desc.tiling is arch.Tiling.TILES
    assert desc.contract == "recurrent" and f"{desc.contract}" == str(desc.contract) == "recurrent"
    assert json.dumps({"contract": desc.contract}) == '{"contract": "recurrent"}'
    assert {"recurrent": 1}[desc.contract] == 1


def test_registry_refuses_a_second_architecture_of_a_name(monkeypatch):
    monkeypatch.setattr(arch, "ARCHS", list(arch.ARCHS))
    same = dataclasses.replace(arch.get_arch("compact"))
    with pytest.raises(ValueError) as e:
        arch.register(same)
    assert str(e.value) == "architecture 'compact' is already registered"
    new = dataclasses.replace(same, name="compact-copy")
    arch.register(new)
    assert arch.get_arch("compact-copy") is new and arch.ARCHS[-1] is new


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        arch.get_arch("nope")
    assert str(e.value) == f"unknown architecture 'nope'; known: {', '.join(a.name for a in arch.ARCHS)}"


def test_parameters_are_completed_and_checked():
    compact = arch.get_arch("compact")
    full = arch.full_params(compact, {"nf": 8})
    assert full["nf"] == 8 and full["upscale"] == 4 and set(full) == {"in_ch", "out_ch", "nf", "num_conv",
                                                                       "upscale", "out_scale"}
    assert arch.full_params(compact, {"out_scale": 1})["out_scale"] == 1  # an int where a float goes
    for bad, what in (({"nf": 8.0}, "parameter 'nf' must be a int, got 8.0"),
                      ({"nf": True}, "parameter 'nf' must be a int, got True"),
                      ({"out_scale": "1"}, "parameter 'out_scale' must be a float, got '1'"),
                      ({"size": 3, "depth": 1}, "compact has no parameter(s) ['depth', 'size']; allowed: ")):
        with pytest.raises(ValueError) as e:
            arch.full_params(compact, bad)
        assert what in str(e.value)


def test_a_network_that_cannot_be_built_says_why():
    with pytest.raises(ValueError) as e:
        arch.build("compact", nf=8, upscale=7)
    assert str(e.value).startswith("compact cannot be built with {") and "upscale" in str(e.value)
    desc = arch.build("compact", nf=8, num_conv=1, upscale=2)
    assert isinstance(desc.model, nn.Module) and desc.params["num_conv"] == 1 and desc.model.training
