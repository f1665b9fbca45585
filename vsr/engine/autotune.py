"""The fastest faithful way to run a network on this CPU, found by measuring it here.

Which runtime and precision win depends on the CPU (AVX2 only, AVX-512, bf16 units, AMX), the network and
the input's size, so rules of thumb are wrong somewhere. When a job runs with ``--backend auto`` and
``--precision auto`` on the CPU, each way this machine can run the network (PyTorch fp32, and bf16 where
the CPU computes it natively; for plain networks OpenVINO fp32 and bf16, int8 for a model trained for it,
and ncnn fp32: see candidates)
is timed on the job's input size (up to MEASURE_SIDE pixels a side). Those whose output is within
FAITHFUL_DB of PyTorch fp32 on a frame of the job compete; the fastest is used. The choice is kept in the
cache folder, keyed by the weights, the size, the tiling, the CPU (model and instruction sets), the library
versions and the thread count: a machine measures a model at a size once.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..arch import Contract
from . import ncnnrt, openvino, quantize
from .device import PRECISIONS, cpu_has_native_bf16

Upscaler = Any  # vsr.engine.upscaler.Upscaler, which calls this module (so not imported here)

FAITHFUL_DB = 40.0  # PSNR against PyTorch fp32 below which a faster way is not the same picture
MEASURE_S = 1.0  # timed per candidate after one warm-up call (at least one timed call)
MEASURE_SIDE = 256  # larger inputs are measured on a crop of this size: the arithmetic per pixel is the same
QUICK_S = 0.05  # a call quicker than this in PyTorch fp32 costs little whichever way it runs: not measured
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "neon", "asimd")
CACHE_FILE = "backends.json"


@dataclass
class Row:
    """One candidate as measured: seconds per call of the measured shape, PSNR against PyTorch fp32."""

    backend: str
    precision: str
    seconds: float | None = None
    psnr: float | None = None  # inf when identical
    error: str | None = None  # why it could not run

    @property
    def faithful(self) -> bool:
        return self.error is None and self.psnr is not None and self.psnr >= FAITHFUL_DB


def candidates(engine: Upscaler) -> list[tuple[str, str]]:
    """(backend, precision) pairs this machine can run the engine's network in, PyTorch fp32 first."""
    bf16 = cpu_has_native_bf16()
    out = [("torch", "fp32")] + [("torch", "bf16")] * bf16
    desc = engine.desc
    if desc.contract == Contract.PLAIN and desc.traceable and openvino.available():
        out += [("openvino", "fp32")] + [("openvino", "bf16")] * bf16
        out += [("openvino", "int8")] * (quantize.FILE in desc.extra)  # a model trained for int8
    # ncnn: from a model's own ncnn files; converting one by pnnx (seconds for compact, 2-4 minutes for an
    # RRDB, once) only where fp32 is all the CPU has: with native bf16 the bf16 paths were 1.6-2.3x faster
    # than ncnn's fp32 on an RRDB here, and within 10% on compact
    if ncnnrt.available() and (ncnnrt.FILES in desc.extra or (not bf16 and ncnnrt.convertible(desc))):
        out.append(("ncnn", "fp32"))
    return out


def cpu() -> dict[str, Any]:
    """What decides speed on this CPU: its model name and the instruction sets that matter here."""
    name, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the name platform gives, and torch's own probe
        pass
    return {"name": name or platform.machine(), "flags": sorted(flags.intersection(FLAGS)),
            "native_bf16": cpu_has_native_bf16()}


def measured_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    b, c, h, w = shape
    return (b, c, min(h, MEASURE_SIDE), min(w, MEASURE_SIDE))


def cache_key(engine: Upscaler, shape: tuple[int, ...]) -> str:
    versions = {"torch": torch.__version__, **{m: _version(m) for m in ("openvino", "ncnn", "pnnx")}}
    measured = measured_shape(shape)
    what = {"weights": engine.weights_sha256(), "arch": engine.desc.arch, "shape": list(measured),
            "tile": engine.tile_for(measured), "ensemble": engine.ensemble, "cpu": cpu(), "versions": versions,
            "threads": torch.get_num_threads()}
    if quantize.FILE in engine.desc.extra:
        what["int8"] = engine.int8_sha256()
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:  # noqa: BLE001 - not installed
        return None


def sample(shape: tuple[int, ...]) -> torch.Tensor:
    """A deterministic picture-like input (smooth noise, not white noise: bf16 errors show as they would)."""
    b, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(b, c, max(1, h // 8), max(1, w // 8), generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def crop(picture: np.ndarray | None, shape: tuple[int, ...]) -> torch.Tensor:
    """The middle of an (H, W, C) uint8 or uint16 picture at least as large as ``shape`` (B, C, h, w) as
    a float batch; smooth noise without a picture, or for one with next to nothing in it (a black frame
    would judge every precision faithful)."""
    b, c, h, w = shape
    if picture is None or picture.ndim != 3 or picture.shape[2] != c or picture.shape[0] < h or \
            picture.shape[1] < w or float(picture.std()) < 0.01 * np.iinfo(picture.dtype).max:
        return sample(shape)
    top, left = (picture.shape[0] - h) // 2, (picture.shape[1] - w) // 2
    part = picture[top:top + h, left:left + w].astype(np.float32) / np.iinfo(picture.dtype).max
    return torch.from_numpy(np.ascontiguousarray(part.transpose(2, 0, 1)))[None].repeat(b, 1, 1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def measure(engine: Upscaler, shape: tuple[int, ...], *, every: bool = False, picture: np.ndarray | None = None
            ) -> tuple[list[Row], dict[tuple[str, str], Upscaler]]:
    """Every candidate timed on ``shape`` (cropped to MEASURE_SIDE) and compared with PyTorch fp32 (only
    PyTorch fp32 when that is under QUICK_S, unless ``every``), on the middle of ``picture`` (a frame of
    the job: how close a precision comes depends on the content) or else on smooth noise; the engines
    built on the way, so that the winner need not be built again. The calls are timed in rounds, one call
    of each candidate a round (so that a busy moment of the machine slows them all alike), for about
    MEASURE_S a candidate and at least one round."""
    x = crop(picture, measured_shape(shape))
    rows, engines, reference = [], {}, None
    for backend, precision in candidates(engine):
        row = Row(backend, precision)
        rows.append(row)
        try:
            e = engine.variant(backend, precision)
            t0 = time.perf_counter()
            out = e(x)  # warm-up: compiles, and the output compared
            if len(rows) == 1 and not every and time.perf_counter() - t0 < 4 * QUICK_S:  # may be small work
                t0 = time.perf_counter()
                e(x)
                seconds = time.perf_counter() - t0
                if seconds < QUICK_S:
                    row.seconds, row.psnr = seconds, float("inf")
                    return rows, {(backend, precision): e}
        except Exception as err:  # noqa: BLE001 - a runtime that fails here is simply not chosen
            row.error = " ".join(str(err).split())[:200] or type(err).__name__
            continue
        reference = out if reference is None else reference  # PyTorch fp32 comes first
        row.psnr = psnr(out, reference)
        engines[(backend, precision)] = e
    timed = [r for r in rows if r.error is None]
    times: dict[tuple[str, str], list[float]] = {(r.backend, r.precision): [] for r in timed}
    end = time.perf_counter() + MEASURE_S * len(timed)
    while times and (not any(times.values()) or time.perf_counter() < end):
        for key, spent in times.items():
            t0 = time.perf_counter()
            engines[key](x)
            spent.append(time.perf_counter() - t0)
    for r in timed:
        r.seconds = statistics.median(times[(r.backend, r.precision)])
    return rows, engines


def fastest(rows: list[Row]) -> Row | None:
    return min((r for r in rows if r.faithful), key=lambda r: r.seconds, default=None)


def choose(engine: Upscaler, shape: tuple[int, ...], *, cache_dir: Path | None = None,
           say: Callable[[str], None] | None = None, picture: np.ndarray | None = None
           ) -> tuple[str, torch.dtype, Upscaler | None]:
    """(backend, precision, an engine already built for it or None) for ``engine``'s network at ``shape``:
    from the cache, or measured now on ``picture`` and kept (``say`` hears that it is being measured)."""
    known = _read(_cache_path(cache_dir)).get(cache_key(engine, shape))
    if known:
        return known["backend"], PRECISIONS[known["precision"]], None
    if say is not None and len(candidates(engine)) > 1:
        say(f"measuring which backend and precision run this {engine.desc.arch} network fastest here "
            "(once per model and size on this machine)")
    rows, engines = measure(engine, shape, picture=picture)
    if len(rows) == 1 and rows[0].seconds is not None and rows[0].seconds < QUICK_S:
        return engine.backend, engine.dtype, None  # a small network on a small input: as the rule has it
    best = remember(engine, shape, rows, cache_dir=cache_dir)
    return best.backend, PRECISIONS[best.precision], engines.get((best.backend, best.precision))


def remember(engine: Upscaler, shape: tuple[int, ...], rows: list[Row], *, cache_dir: Path | None = None) -> Row:
    """The fastest faithful row (PyTorch fp32 if none ran), kept in the cache as this machine's choice."""
    best = fastest(rows) or Row("torch", "fp32")
    path = _cache_path(cache_dir)
    known = _read(path)
    known[cache_key(engine, shape)] = {"backend": best.backend, "precision": best.precision,
                                       "shape": list(measured_shape(shape)), "model": engine.desc.arch,
                                       "rows": [asdict(r) for r in rows], "measured": time.time()}
    _write(path, known)
    return best


def _cache_path(cache_dir: Path | None) -> Path:
    from .. import zoo

    return (cache_dir or zoo.cache_dir()) / CACHE_FILE


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # none yet, or unreadable: measured again
        return {}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
