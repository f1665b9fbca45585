"""Batched inference of one network on one device: precision, memory layout, tiling and recovery."""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..arch import ModelDescriptor
from ..errors import VsrError
from .device import select_device, select_precision
from .tiling import tiled

MIN_TILE = 32


@dataclass
class EngineStats:
    model_seconds: float = 0.0
    frames: int = 0
    nonfinite_recomputed: int = 0  # tiles recomputed in fp32 because half precision overflowed
    oom_retries: int = 0


class Upscaler:
    """Runs a :class:`ModelDescriptor` on batches of images.

    ``tile``: ``"auto"`` (bounded by memory), ``0`` (never tile) or an input tile size in pixels.
    """

    def __init__(self, desc: ModelDescriptor, *, device: str = "auto", precision: str = "auto",
                 tile: str | int = "auto", overlap: int | None = None) -> None:
        self.desc = desc
        self.device = select_device(device)
        self.dtype = select_precision(precision, self.device, supports_fp16=desc.supports_fp16,
                                      supports_bf16=desc.supports_bf16)
        # channels_last feeds tensor cores on GPUs and oneDNN on CPUs (benchmarks/bench_cpu_throughput.py:
        # 1.1x faster in fp32, 2x in bf16 here); MPS supports it poorly
        self.memory_format = torch.contiguous_format if self.device.type == "mps" else torch.channels_last
        # desc.model stays fp32: the source of the fp32 fallback for non-finite half-precision output
        model = desc.model if self.dtype == torch.float32 else copy.deepcopy(desc.model)
        self.model = model.to(self.device, self.dtype, memory_format=self.memory_format).eval()
        self._fp32_model: torch.nn.Module | None = None
        if tile != "auto" and (not isinstance(tile, int) or tile < 0):
            raise VsrError(f"--tile must be auto, 0 or a positive number of pixels, got {tile!r}")
        self.tile = tile
        self.overlap = desc.tile_overlap if overlap is None else overlap
        self.stats = EngineStats()

    # -- sizes ------------------------------------------------------------------------------------
    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return round(h * self.desc.scale), round(w * self.desc.scale)

    def _auto_tile(self, x: torch.Tensor) -> int:
        """The largest tile whose activations fit the memory budget (0: the whole image fits); tiles
        are then made equal so that no work is wasted on a thin last tile. The budget depends on the
        device's size, not on what is free at the moment, so the same input always gets the same tiles
        (a resumed video matches an uninterrupted run); out of memory still halves the tile."""
        if self.device.type == "cuda":  # 40% of the GPU
            budget = torch.cuda.get_device_properties(self.device).total_memory * 2 // 5
        else:  # a quarter of the machine's memory
            budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
        per_px = self.desc.bytes_per_px * torch.finfo(self.dtype).bits // 32 * x.shape[0]
        side = max(MIN_TILE, int(math.sqrt(budget / per_px)))
        longest = max(x.shape[-2:])
        if longest <= side:
            return 0
        overlap = self.overlap * self.desc.size_multiple
        n = math.ceil((longest - overlap) / max(side - overlap, 1))
        return min(side, math.ceil((longest + (n - 1) * overlap) / n / 8) * 8)

    # -- inference --------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) float on device -> (B, C, h*s, w*s) float32, recomputing non-finite output in fp32."""
        m = self.desc.size_multiple
        h, w = x.shape[-2:]
        ph, pw = -h % m, -w % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        out = self.model(x.to(self.dtype).contiguous(memory_format=self.memory_format))
        if self.dtype != torch.float32 and not torch.isfinite(out).all():
            self.stats.nonfinite_recomputed += 1
            if self._fp32_model is None:
                self._fp32_model = copy.deepcopy(self.desc.model).to(self.device, torch.float32)
            out = self._fp32_model(x.float().contiguous(memory_format=self.memory_format))
        oh, ow = self.out_size(h, w)
        return out[:, :, :oh, :ow].float()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1] -> (B, C, sH, sW) float32, unclamped (on the CPU when tiled)."""
        x = x.to(self.device, non_blocking=True)
        tile = self._auto_tile(x) if self.tile == "auto" else self.tile
        scale = self.desc.scale
        if tile and tile < max(x.shape[-2:]) and scale != int(scale):
            raise VsrError(f"tiling needs an integer scale, this model has {scale}; use --tile 0")
        start = time.perf_counter()
        while True:
            try:
                if tile and tile < max(x.shape[-2:]):
                    tile = max(tile // self.desc.size_multiple * self.desc.size_multiple, MIN_TILE)
                    m = self.desc.size_multiple  # networks on m-pixel cells see m times further
                    out = tiled(self._forward, x, tile=tile, overlap=self.overlap * m, scale=int(scale),
                                align=m)
                else:
                    out = self._forward(x)
                break
            except torch.cuda.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                torch.cuda.empty_cache()
                if tile and tile <= MIN_TILE:
                    raise VsrError("out of GPU memory even with the smallest tile; use --device cpu") from None
                tile = (tile or max(x.shape[-2:])) // 2
                self.stats.oom_retries += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats.model_seconds += time.perf_counter() - start
        self.stats.frames += x.shape[0]
        if self.tile == "auto" and self.stats.oom_retries:
            self.tile = tile  # remember what fits
        return out

    @torch.inference_mode()
    def upscale_array(self, arr: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 / uint16 / float32 RGB -> (N, sH, sW, C) of the same dtype.

        The integer <-> float conversion runs on the engine's device (pinned host memory on CUDA).
        """
        if arr.ndim != 4:
            raise ValueError(f"expected (N, H, W, C), got shape {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if self.device.type == "cuda":
            t = t.pin_memory()
        t = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        peak = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
        out = self(t.float().div_(peak)).clamp_(0, 1)
        if peak != 1.0:
            out = out.mul_(peak).round_().to(torch.int32 if arr.dtype == np.uint16 else torch.uint8)
        out = out.permute(0, 2, 3, 1).cpu().numpy()
        return out.astype(arr.dtype, copy=False)
