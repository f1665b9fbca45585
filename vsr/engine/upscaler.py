"""Batched inference of one network on one device: precision, memory layout, tiling and recovery.

The engine calls a network by the contract its descriptor names (``ModelDescriptor.contract``):

plain
    ``model(x) -> y``, x (B, C, h, w) in [0, 1], y (B, C', h*s, w*s). Frames are batched and tiled.
    Nothing else is asked of the module, so any callable with this signature on the engine's device
    (an exported graph on another runtime) can stand in for it.
sampled
    ``model.latent_shapes(h, w) -> [(C, h', w'), ...]``: the latents the module samples for an input
    of h x w (a multiple of ``size_multiple``); ``model.reverse(x, latents) -> y`` with each latent
    (B, C, h', w'). The engine draws the latents: ``temperature * N(0, 1)`` from a CPU generator seeded
    by (seed, frame index) for ``tiling="latent"`` (the whole frame's latents, sliced to each tile,
    so tiled equals whole), or by (seed, frame index, tile number) for ``tiling="tiles"``. Temperature
    0 gives all-zero latents. Output therefore never depends on batching, tiling or resuming.
    Settings: ``temperature`` (default 0) and ``seed`` (default 0), when listed in ``settings``.
recurrent
    ``model(x, prev_x, prev_y) -> y`` for one frame (B=1): prev_x and prev_y are the previous frame's
    input and output (None after a reset). The engine keeps them in the video's :class:`Session`,
    slices them to each tile with the frame, and resets them where the caller says (a scene cut, the
    start of a video or of a segment's warm-up). ``context_frames`` says how many frames before a
    segment's first the video layer re-emits (run, not encoded) to rebuild the state, so that segments
    stay independent and resumable.

Self-ensemble (``ensemble`` 4 or 8, plain networks only): the frame also goes through the network
flipped (and transposed, for 8) and the outputs, turned back, are averaged; it costs 4 or 8 times
the time for a smoother, slightly more faithful result.

Tiling (``ModelDescriptor.tiling``): ``tiles`` (overlapping tiles blended with a cross-fade) or
``latent`` (tiles, the latents sliced to match).
A half-precision part with non-finite output is recomputed in fp32, and a sampled one that is still
not usable at temperature 0; each such part is counted in ``EngineStats.nonfinite_recomputed``. A
sampled part is usable when finite and within +-16 (a flow's reverse pass can blow up, finite but
huge, on latents far from those it learnt). A sampled module may offer ``fallback(x)``, a plain
deterministic output (SRFlow: its RRDB's own SR image), for a part still not usable at temperature 0
(counted in ``nonfinite_fallback``).

Half precision by autocast (``ModelDescriptor.autocast``): the weights stay fp32 and the module is called
under ``torch.autocast`` in the half type the engine picked, so that the module decides which of its parts
run in half precision (SRFlow: its RRDB encoder; the flow turns autocast off). Its fp32 recomputation is
the same module called without autocast.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..arch import Contract, ModelDescriptor, Tiling
from ..errors import VsrError
from . import ncnnrt, openvino, quantize
from .device import PRECISIONS, select_device, select_precision
from .tiling import tile_count, tiled

MIN_TILE = 32


@dataclass
class EngineStats:
    """What a job's report shows of the engine's work."""
    model_seconds: float = 0.0
    nonfinite_recomputed: int = 0  # parts recomputed in fp32 (or at temperature 0) because output was not finite
    nonfinite_fallback: int = 0  # sampled parts still not finite at temperature 0: the module's fallback(x)


def frame_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (seed, frame index[, tile]): the same draws on
    every device and in every batch."""
    state = np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


BLOWN_UP = 16.0  # a flow's output beyond +-16 (a picture is [0, 1]) has blown up in the reverse pass


def usable(out: torch.Tensor, contract: Contract = Contract.SAMPLED) -> bool:
    """Whether a network's output can be shown: finite, and for a flow (whose reverse pass can blow up on
    latents far from those it learnt: finite but huge) within +-BLOWN_UP."""
    if not torch.isfinite(out).all():
        return False
    return contract != Contract.SAMPLED or bool(out.abs().amax() <= BLOWN_UP)


class Upscaler:
    """Runs a :class:`ModelDescriptor` on batches of images.

    ``tile``: ``"auto"`` (bounded by memory), ``0`` (never tile) or an input tile size in pixels.
    ``temperature``, ``seed``: settings of a sampled model (an error for a model that takes none).
    ``ensemble``: 1, or 4 / 8 flipped (and transposed) passes averaged (plain networks).
    ``backend``: ``auto`` (OpenVINO for a plain network on the CPU where it is installed), ``torch`` or
    ``openvino``.
    """

    def __init__(self, desc: ModelDescriptor, *, device: str = "auto", precision: str = "auto",
                 tile: str | int = "auto", overlap: int | None = None, temperature: float | None = None,
                 seed: int | None = None, ensemble: int = 1, backend: str = "auto") -> None:
        self.desc = desc
        if ensemble not in (1, 4, 8):
            raise VsrError(f"--ensemble must be 4 or 8, got {ensemble}")
        if ensemble > 1 and desc.contract != Contract.PLAIN:
            raise VsrError(f"--ensemble needs a plain network; this {desc.arch} model is {desc.contract}")
        self.ensemble = ensemble
        for name, value in (("temperature", temperature), ("seed", seed)):
            if value is not None and name not in desc.settings:
                raise VsrError(f"this {desc.arch} model takes no {name} (it is a {desc.contract} model); "
                               f"remove --{'tau' if name == 'temperature' else name}")
        if temperature is not None and not (0 <= temperature <= 10):
            raise VsrError(f"temperature must be between 0 and 10, got {temperature}")
        self.temperature = float(temperature or 0.0)
        self.seed = int(seed or 0)
        self.device = select_device(device)
        self.dtype = select_precision(precision, self.device)
        # channels_last feeds tensor cores on GPUs and oneDNN on CPUs (benchmarks/bench_cpu_throughput.py:
        # 1.1x faster in fp32, 2x in bf16 here); MPS supports it poorly
        self.memory_format = torch.contiguous_format if self.device.type == "mps" else torch.channels_last
        # both auto on the CPU: the fastest faithful pair on this machine, measured at the first shape (tune)
        self.tunable = self.device.type == "cpu" and backend == "auto" and precision == "auto"
        self._weights_sha256: str | None = None
        self._int8_sha256: str | None = None
        chosen = openvino.choose(backend, device=self.device, contract=desc.contract, traceable=desc.traceable,
                                 ncnn=ncnnrt.runnable(desc))
        if chosen == "ncnn" and precision == "auto":
            self.dtype = torch.float32  # what ncnn computes in on a CPU
        self._build(chosen, self.dtype)
        if tile != "auto" and (not isinstance(tile, int) or tile < 0):
            raise VsrError(f"--tile must be auto, 0 or a positive number of pixels, got {tile!r}")
        self.tile = tile
        self.learned_tile: int | None = None  # what fitted after running out of memory
        self.overlap = desc.tile_overlap if overlap is None else overlap
        self.stats = EngineStats()

    def _build(self, backend: str, dtype: torch.dtype) -> None:
        """The network as ``backend`` runs it in ``dtype``."""
        desc = self.desc
        self.backend, self.dtype = backend, dtype
        self._call_dtype = dtype  # what the network is handed
        self._fp32_model: torch.nn.Module | None = None
        if backend == "ncnn":
            if dtype != torch.float32:
                raise VsrError("--backend ncnn computes in fp32 on the CPU; use --precision fp32 or auto")
            self.model = ncnnrt.NcnnNet(*ncnnrt.files(desc, self.weights_sha256()), threads=torch.get_num_threads())
        elif backend == "openvino":
            module, key = desc.model, self.weights_sha256()
            if dtype == torch.int8:
                module, key = quantize.load(desc.model, self.int8_file()), "int8:" + self.int8_sha256()
            self.model = openvino.OpenVinoNet(module, in_ch=desc.in_ch, dtype=dtype, threads=torch.get_num_threads(),
                                              weights=key)
            self._call_dtype = torch.float32
        elif dtype == torch.int8:
            raise VsrError("--precision int8 runs through OpenVINO; use --backend auto or openvino (pip install "
                           "openvino where it is missing)")
        elif desc.autocast:  # fp32 weights, called under autocast (see _call)
            self.model = desc.model.to(self.device, memory_format=self.memory_format).eval()
            self._call_dtype = torch.float32
        else:  # desc.model stays fp32: the source of the fp32 fallback for non-finite half-precision output
            model = desc.model if dtype == torch.float32 else copy.deepcopy(desc.model)
            self.model = model.to(self.device, dtype, memory_format=self.memory_format).eval()

    def variant(self, backend: str, precision: str) -> Upscaler:
        """The same network and settings run by another backend in another precision."""
        settings = {k: getattr(self, k) for k in ("temperature", "seed") if k in self.desc.settings}
        return Upscaler(self.desc, device=str(self.device), precision=precision, backend=backend, tile=self.tile,
                        overlap=self.overlap, ensemble=self.ensemble, **settings)

    def tune(self, shape: Sequence[int], say: Callable[[str], None] | None = None,
             picture: np.ndarray | None = None) -> None:
        """With backend and precision auto on the CPU: run as the fastest faithful backend and precision
        for inputs of ``shape`` (B, C, H, W) on this machine (vsr.engine.autotune: measured once, on
        ``picture`` (H, W, C) when given, and cached; ``say`` hears when it measures)."""
        if not self.tunable:
            return
        self.tunable = False
        from . import autotune

        backend, dtype, built = autotune.choose(self, tuple(shape), say=say, picture=picture)
        if built is not None:
            self.backend, self.dtype, self.model, self._call_dtype = (built.backend, built.dtype, built.model,
                                                                     built._call_dtype)
            self._fp32_model = None
        elif (backend, dtype) != (self.backend, self.dtype):
            self._build(backend, dtype)

    # -- what decides the output ------------------------------------------------------------------
    def int8_file(self) -> str:
        path = self.desc.extra.get(quantize.FILE)
        if not path:
            raise VsrError(f"--precision int8 needs a model trained for it (its card names an int8 file; "
                           f"compact has one); this {self.desc.arch} model has none: use bf16 or fp32")
        return path

    def int8_sha256(self) -> str:
        if self._int8_sha256 is None:
            from ..zoo import file_sha256  # zoo loads models through this module

            self._int8_sha256 = file_sha256(self.int8_file())
        return self._int8_sha256

    def weights_sha256(self) -> str:
        if self._weights_sha256 is None:
            h = hashlib.sha256()
            for name, tensor in sorted(self.desc.model.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._weights_sha256 = h.hexdigest()
        return self._weights_sha256

    def identity(self) -> dict[str, Any]:
        """Everything of the engine that decides output pixels, for resume manifests: the weights
        (hashed, not named), contract, device, precision, the tile actually used, and the settings."""
        ident = {"arch": self.desc.arch, "weights_sha256": self.weights_sha256(), "contract": self.desc.contract,
                 "device": self.device.type, "dtype": str(self.dtype), "backend": self.backend,
                 "tile": self.learned_tile if self.learned_tile else str(self.tile), "overlap": self.overlap,
                 "ensemble": self.ensemble}
        if self.dtype == torch.int8:  # other weights than the model's own
            ident["int8_sha256"] = self.int8_sha256()
        if "temperature" in self.desc.settings:
            ident["temperature"] = self.temperature
        if "seed" in self.desc.settings:
            ident["seed"] = self.seed
        return ident

    def adopt(self, recorded: dict[str, Any] | None) -> None:
        """Continue unfinished work as it was run (``recorded`` is its :meth:`identity`): in the backend and
        precision measured fastest then, and with the tile it fell back to after running out of memory."""
        if not recorded:
            return
        if self.tunable:  # not measured again: the cache may have gone, or another run chosen otherwise
            named = {str(t): t for t in PRECISIONS.values()}
            backend, dtype = recorded.get("backend"), recorded.get("dtype")
            runs = {"torch": True, "openvino": openvino.available(), "ncnn": ncnnrt.runnable(self.desc)}
            if runs.get(backend) and dtype in named:
                self.tunable = False
                if (backend, named[dtype]) != (self.backend, self.dtype):
                    self._build(backend, named[dtype])
        if self.tile != "auto" or not isinstance(recorded.get("tile"), int):
            return
        if all(recorded.get(k) == v for k, v in self.identity().items() if k != "tile"):
            self.learned_tile = recorded["tile"]

    @property
    def stateful(self) -> bool:
        """Output depends on earlier frames: scene cuts must reset it."""
        return self.desc.contract == Contract.RECURRENT

    # -- sizes ------------------------------------------------------------------------------------
    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return round(h * self.desc.scale), round(w * self.desc.scale)

    def tile_for(self, shape: Sequence[int]) -> int:
        """The input tile size for a batch of ``shape`` (B, C, H, W); 0: the whole frame at once."""
        if self.learned_tile:
            tile = self.learned_tile
        elif self.tile == "auto":
            tile = self._auto_tile(shape)
        else:
            tile = self.tile
        m = self.desc.size_multiple
        tile = max(tile // m * m, MIN_TILE) if tile else 0
        return tile if tile < max(shape[-2:]) else 0

    def tiles(self, h: int, w: int, batch: int = 1) -> int:
        """How many tiles one (padded) h x w frame is computed in."""
        m = self.desc.size_multiple
        h, w = -(-h // m) * m, -(-w // m) * m
        tile = self.tile_for((batch, self.desc.in_ch, h, w))
        return tile_count(h, w, tile=tile, overlap=self.overlap, align=m)

    def _auto_tile(self, shape: Sequence[int]) -> int:
        """The largest tile whose activations fit the memory budget (0: the whole image fits); tiles
        are then made equal so that no work is wasted on a thin last tile. The budget depends on the
        device's size, not on what is free at the moment, so the same input always gets the same tiles
        (a resumed video matches an uninterrupted run); out of memory still halves the tile."""
        if self.device.type == "cuda":  # 40% of the GPU
            budget = torch.cuda.get_device_properties(self.device).total_memory * 2 // 5
        else:  # a quarter of the machine's memory
            budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
        bits = 32 if self.desc.autocast or not self.dtype.is_floating_point else torch.finfo(self.dtype).bits
        per_px = self.desc.bytes_per_px * bits // 32 * shape[0]
        side = max(MIN_TILE, int(math.sqrt(budget / per_px)))
        longest = max(shape[-2:])
        if longest <= side:
            return 0
        n = math.ceil((longest - self.overlap) / max(side - self.overlap, 1))
        return min(side, math.ceil((longest + (n - 1) * self.overlap) / n / 8) * 8)

    # -- inference --------------------------------------------------------------------------------
    def session(self) -> Session:
        """A new video: frame indices for seeded latents, and the recurrent state."""
        return Session(self)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1] -> (B, C, sH, sW) float32, unclamped (on the CPU when tiled);
        each image on its own (frame 0 of a video of its own)."""
        return self.session()(x, indices=[0] * x.shape[0], resets=[True] * x.shape[0])

    def upscale_array(self, arr: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 / uint16 / float32 RGB -> (N, sH, sW, C) of the same dtype; each image on its own."""
        return self.session().upscale_array(arr, indices=[0] * len(arr), resets=[True] * len(arr))

    def _call(self, model: torch.nn.Module, x: torch.Tensor, *args: torch.Tensor | list | None,
              half: bool = True) -> torch.Tensor:
        """One call of the module by its contract; ``x`` is in the module's dtype, ``args`` are cast to it.
        An autocast module runs under autocast in the engine's half type unless ``half`` is False."""
        if self.desc.autocast and half and self.dtype != torch.float32:
            with torch.autocast(self.device.type, dtype=self.dtype):
                return self._call(model, x, *args, half=False)
        def cast(a):
            if a is None:
                return None
            if isinstance(a, list):
                return [cast(t) for t in a]
            return a.to(self.device, x.dtype).contiguous(memory_format=self.memory_format)

        x = cast(x)
        if self.desc.contract == Contract.SAMPLED:
            return model.reverse(x, cast(args[0]))
        if self.desc.contract == Contract.RECURRENT:
            return model(x, cast(args[0]), cast(args[1]))
        return model(x)

    def _forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        """One part (a tile or a whole batch) -> float32 output, recovering from non-finite (or, for a flow,
        blown-up) values."""
        out = self._call(self.model, x.to(self._call_dtype), *args)
        if usable(out, self.desc.contract):
            return out.float()
        if self.dtype != torch.float32:
            if self._fp32_model is None:
                self._fp32_model = self.model if self.desc.autocast else copy.deepcopy(self.desc.model).to(
                    self.device, torch.float32, memory_format=self.memory_format)
            self.stats.nonfinite_recomputed += 1
            out = self._call(self._fp32_model, x.float(), *args, half=False)
            if usable(out, self.desc.contract) or self.desc.contract != Contract.SAMPLED:
                return out.float()
        if self.desc.contract == Contract.SAMPLED:  # latents far from what the flow knows: its mean instead
            if self.dtype == torch.float32:
                self.stats.nonfinite_recomputed += 1
            zeros = [torch.zeros_like(z) for z in args[0]]
            model = self._fp32_model or self.model
            out = self._call(model, x.float(), zeros, half=False)
            if not usable(out, self.desc.contract) and callable(getattr(model, "fallback", None)):
                self.stats.nonfinite_fallback += 1
                out = model.fallback(x.to(self.device, torch.float32))
        return out.float()

    def _tiled(self, x: torch.Tensor, part_fn: Callable[[torch.Tensor, tuple[int, int], int], torch.Tensor]
               ) -> torch.Tensor:
        """``part_fn`` over the tiles of the padded batch ``x``, halving the tile on CUDA out-of-memory."""
        scale, m = self.desc.scale, self.desc.size_multiple
        tile = self.tile_for(x.shape)
        while True:
            if tile and scale != int(scale):
                raise VsrError(f"tiling needs an integer scale, this model has {scale}; use --tile 0, or "
                               "--device cpu where it runs out of GPU memory")
            try:
                return tiled(part_fn, x, tile=tile, overlap=self.overlap, scale=int(scale), align=m)
            except torch.cuda.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                torch.cuda.empty_cache()
                if tile and tile <= MIN_TILE:
                    raise VsrError("out of GPU memory even with the smallest tile; use --device cpu") from None
                tile = max(MIN_TILE, (tile or max(x.shape[-2:])) // 2 // m * m)
                if self.tile == "auto":
                    self.learned_tile = tile  # remember what fits; identity() says so

    def _latents(self, shape: tuple[int, int], keys: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """Latents for a (B, C, h, w) input: one draw per image from its key's generator."""
        shapes = self.model.latent_shapes(*shape)
        if self.temperature == 0:
            return [torch.zeros(len(keys), *s) for s in shapes]
        per_image = []
        for key in keys:
            g = frame_generator(*key)
            per_image.append([torch.randn(s, generator=g) * self.temperature for s in shapes])
        return [torch.stack([zs[i] for zs in per_image]) for i in range(len(shapes))]


def _pad(x: torch.Tensor, m: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % m, -w % m
    if not (ph or pw):
        return x
    return F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")


class Session:
    """One video's pass through an :class:`Upscaler`: it knows each frame's index in the video and keeps
    a recurrent model's state (the previous frame's input and output) from one call to the next."""

    def __init__(self, engine: Upscaler) -> None:
        self.engine = engine
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None  # (prev_x, prev_y), padded

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, *, indices: Sequence[int], resets: Sequence[bool]) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1], frames ``indices`` of the video -> (B, C, sH, sW) float32, unclamped.
        ``resets[i]``: frame i starts afresh (no state from the frames before it)."""
        e = self.engine
        assert len(indices) == len(resets) == x.shape[0]
        h, w = x.shape[-2:]
        oh, ow = e.out_size(h, w)
        x = _pad(x.to(e.device, non_blocking=True), e.desc.size_multiple)
        start = time.perf_counter()
        if e.desc.contract == Contract.RECURRENT:
            out = torch.cat([self._step(x[i:i + 1], reset).to(x.device) for i, reset in enumerate(resets)])
        elif e.desc.contract == Contract.SAMPLED:
            out = self._sample(x, list(indices))
        else:
            out = None
            for t in range(e.ensemble):  # t's bits: flip W, flip H, transpose
                dims = [d for d, bit in ((-1, 1), (-2, 2)) if t & bit]
                xt = x.transpose(-1, -2) if t & 4 else x
                y = e._tiled(xt.flip(dims) if dims else xt, lambda part, origin, n: e._forward(part))
                y = y.flip(dims) if dims else y
                y = y.transpose(-1, -2) if t & 4 else y
                out = y if out is None else out.add_(y.to(out.device))
            if e.ensemble > 1:
                out = out / e.ensemble
        if e.device.type == "cuda":
            torch.cuda.synchronize(e.device)
        e.stats.model_seconds += time.perf_counter() - start
        return out[:, :, :oh, :ow].float()

    def _sample(self, x: torch.Tensor, indices: list[int]) -> torch.Tensor:
        e = self.engine
        H, W = x.shape[-2:]
        if e.desc.tiling == Tiling.LATENT:  # the whole frame's latents, each tile takes its part
            full = e._latents((H, W), [(e.seed, i) for i in indices])

            def part_fn(part, origin, n):
                y0, x0 = origin
                h, w = part.shape[-2:]
                zs = []
                for z in full:
                    zh, zw = z.shape[-2:]
                    assert (y0 * zh) % H == (h * zh) % H == (x0 * zw) % W == (w * zw) % W == 0, "latent grid"
                    zs.append(z[:, :, y0 * zh // H:(y0 + h) * zh // H, x0 * zw // W:(x0 + w) * zw // W])
                return e._forward(part, zs)
        else:  # each tile draws its own
            def part_fn(part, origin, n):
                return e._forward(part, e._latents(part.shape[-2:], [(e.seed, i, n) for i in indices]))
        return e._tiled(x, part_fn)

    def _step(self, x: torch.Tensor, reset: bool) -> torch.Tensor:
        """One frame (1, C, H, W) of a recurrent model; the state moves on to it."""
        e = self.engine
        if reset:
            self.state = None
        s = int(e.desc.scale)
        prev = self.state

        def part_fn(part, origin, n):
            if prev is None:
                return e._forward(part, None, None)
            y0, x0 = origin
            h, w = part.shape[-2:]
            return e._forward(part, prev[0][:, :, y0:y0 + h, x0:x0 + w],
                              prev[1][:, :, y0 * s:(y0 + h) * s, x0 * s:(x0 + w) * s])
        out = e._tiled(x, part_fn)
        self.state = (x, out)
        return out

    def upscale_array(self, arr: np.ndarray, *, indices: Sequence[int], resets: Sequence[bool]) -> np.ndarray:
        """(N, H, W, C) uint8 / uint16 / float32 RGB -> (N, sH, sW, C) of the same dtype.

        The integer <-> float conversion runs on the engine's device (pinned host memory on CUDA).
        """
        if arr.ndim != 4:
            raise ValueError(f"expected (N, H, W, C), got shape {arr.shape}")
        device = self.engine.device
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(arr))
            if device.type == "cuda":
                t = t.pin_memory()
            t = t.to(device, non_blocking=True).permute(0, 3, 1, 2)
            peak = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
            out = self(t.float().div_(peak), indices=indices, resets=resets).clamp_(0, 1)
            if peak != 1.0:
                out = out.mul_(peak).round_().to(torch.int32 if arr.dtype == np.uint16 else torch.uint8)
            out = out.permute(0, 2, 3, 1).cpu().numpy()
        return out.astype(arr.dtype, copy=False)
