"""`vsr bench`: how fast a model runs on this machine, and how close that is to the machine's limit.

Measured in one run, medians of ``--runs``:

model-only
    a batch of frames of ``--size`` through the engine `vsr upscale` uses (same device, precision, memory
    layout, automatic tiles and default batch), uint8 in and out as the video pipeline calls it.
arithmetic
    the FLOPs of one such call, counted at the operator level (every convolution and matrix product the
    network runs, whatever its architecture), over its time: achieved GFLOP/s.
peak
    GFLOP/s of a large matrix multiply in the same precision on the same device: the practical ceiling,
    so achieved / peak says how much of the hardware the network uses.
pipeline
    `vsr upscale` itself (decode thread, engine, encode thread, mux; its defaults) on a clip of that size
    generated in a temporary folder (FFV1, lossless, so decoding costs little), or on ``--clip``. Its
    frames/s is the marginal rate (N - b) / (T(N frames) - T(one batch of b)), which leaves out what a run
    pays once (loading the model, probing, opening the encoder, muxing) and counts what the encoder
    buffers and only finishes at the end.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import torch

from . import zoo
from .engine import PRECISIONS, Upscaler, autotune
from .engine.measure import check_precision_runs, count_flops, matmul_peak_gflops, matmul_size, median_seconds
from .errors import VsrError
from .video import probe

DEFAULT_SIZE = "320x240"


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or not (int(m[1]) > 0 and int(m[2]) > 0):
        raise VsrError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 768x576; got {text!r}")
    return int(m[1]), int(m[2])


@dataclass(kw_only=True)
class BenchResult:
    model: str
    size: str  # input WxH
    out_size: str
    precision: str
    device: str
    backend: str  # torch, or openvino
    threads: int
    runs: int
    batch: int
    tile: int  # input tile side the engine used (0: whole frames)
    seconds_per_frame: float  # model-only
    model_fps: float
    flops_per_frame: float
    gflops: float  # achieved by the model-only run
    peak_gflops: float  # matmul in the same precision
    peak_ratio: float
    matmul: int  # side of the peak's matrices
    pipeline_frames: int
    pipeline_codec: str
    pipeline_fps: float
    pipeline_ratio: float  # pipeline_fps / model_fps
    clip: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        tiles = f"tiles of {self.tile} px" if self.tile else "whole frames"
        return [
            f"{self.model} {self.size} -> {self.out_size} on {self.device} ({self.backend}, {self.precision}, "
            f"{self.threads} threads, batch {self.batch}, {tiles}); medians of {self.runs} runs",
            f"model-only  {self.seconds_per_frame:9.3f} s/frame  {self.model_fps:9.3f} frames/s  "
            f"{self.flops_per_frame / 1e9:10.4g} GFLOP/frame",
            f"achieved    {self.gflops:9.4g} GFLOP/s = {self.peak_ratio:.1%} of the peak",
            f"peak        {self.peak_gflops:9.4g} GFLOP/s ({self.precision} matmul {self.matmul}x{self.matmul})",
            f"pipeline    {self.pipeline_fps:9.3f} frames/s  vsr upscale end to end ({self.pipeline_codec}, "
            f"{self.pipeline_frames} frames{', ' + self.clip if self.clip else ''}) = "
            f"{self.pipeline_ratio:.1%} of model-only",
        ]


def scene_frames(width: int, height: int, count: int) -> np.ndarray:
    """(count, H, W, 3) uint8: a camera panning across the demo's synthetic scene (edges, text, gradients)."""
    from .demo import make_scene

    scene = make_scene(max(width + 2 * count, 64), max(height + count, 64))
    return np.stack([scene[i:i + height, 2 * i:2 * i + width] for i in range(count)])


def write_clip(path: Path, frames: np.ndarray, rate: int = 25) -> Path:
    """An FFV1 Matroska clip of (N, H, W, 3) RGB frames in 4:2:0, as most video is: cheap to decode, no
    compression loss."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def read_frames(path: Path, count: int) -> np.ndarray:
    try:
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(count), c.decode(video=0))]
    except (av.error.FFmpegError, IndexError) as e:
        raise VsrError(f"{path}: cannot read its video ({' '.join(str(e).split())})") from None
    if len(frames) < count:
        raise VsrError(f"{path} has only {len(frames)} frames; {count} are needed")
    return np.stack(frames)


def pipeline_seconds(clip: Path, out: Path, *, frames: int, model: str, device: str, precision: str, batch: int,
                     codec: str | None, backend: str = "auto") -> float:
    """Wall time of `vsr upscale` on the first ``frames`` frames, with its defaults (resumable segments,
    archival encoder settings), options made the way the command line makes them."""
    from .upscale import options_with_preset, upscale

    given = dict.fromkeys(("scale", "temperature", "seed", "ensemble", "segment_frames", "crf", "encoder_preset",
                           "pix_fmt", "deinterlace", "double_rate", "crop", "colour"))
    given.update(model=model, device=device, precision=precision, backend=backend, tile="auto", overwrite=True,
                 batch=batch, codec=codec, keep_sar=False, max_frames=frames)
    opts = options_with_preset(None, encoder_options={}, quiet=True, resume=True, **given)
    t = time.perf_counter()
    report = upscale(clip, out, opts)
    seconds = time.perf_counter() - t
    if report.frames != frames:
        raise VsrError(f"the pipeline run upscaled {report.frames} frames, {frames} expected")
    return seconds


def measure(*, model: str = zoo.DEFAULT_MODEL, size: tuple[int, int] | None = None, precision: str = "auto",
            device: str = "auto", frames: int = 6, runs: int = 3, batch: int | None = None,
            codec: str | None = None, clip: Path | None = None, backend: str = "auto",
            say: Callable[[str], None] = lambda line: None) -> BenchResult:
    """Everything `vsr bench` prints (see the module's docstring); ``say`` hears what is being measured."""
    from .job import default_batch

    if runs < 1 or frames < 1 or (batch is not None and batch < 1):
        raise VsrError("--runs, --frames and --batch must be positive")
    if clip is not None and size is not None:
        raise VsrError("--size comes from --clip; give one or the other")
    if clip is not None:
        if not clip.is_file():
            raise VsrError(f"{clip} does not exist")
        known = probe(clip).frames
        if known and known < frames:
            raise VsrError(f"{clip} has {known} frames; give --frames {known} or fewer")
    desc, _ = zoo.resolve(model)
    if desc.in_ch != 3 or desc.out_ch != 3:
        raise VsrError(f"model {model} has {desc.in_ch} input channels; only RGB models are supported")
    engine = Upscaler(desc, device=device, precision=precision, backend=backend)
    check_precision_runs(engine.dtype, engine.device)
    b = batch or default_batch(engine.device.type)
    if frames <= b:
        raise VsrError(f"--frames must be more than one batch ({b}): the pipeline's rate is measured past it")
    with tempfile.TemporaryDirectory(prefix="vsr-bench-") as tmp:
        if clip is None:
            w, h = size or parse_size(DEFAULT_SIZE)
            clip = write_clip(Path(tmp) / f"bench-{w}x{h}.mkv", scene_frames(w, h, frames))
            shown_clip = None
        else:
            shown_clip = str(clip)
        arr = read_frames(clip, b)
        h, w = arr.shape[1:3]
        oh, ow = engine.out_size(h, w)
        engine.tune((b, desc.in_ch, h, w), picture=arr[0])  # as vsr upscale: the fastest way on this machine
        name = next(k for k, v in PRECISIONS.items() if v == engine.dtype)
        arith = "fp32" if name == "int8" else name  # PyTorch has no int8 convolution to count or time: fp32's
        session = engine.session()
        call = lambda: session.upscale_array(arr, indices=list(range(b)), resets=[False] * b)  # noqa: E731
        say(f"model-only: {model} {w}x{h} on {engine.device} ({name}), batch {b}")
        session.upscale_array(arr, indices=list(range(b)), resets=[True] * b)  # builds kernels; a recurrent state
        if engine.backend == "torch":
            flops = count_flops(call)
        else:  # the arithmetic is counted on PyTorch's operators: the same network through them, once
            counter = Upscaler(desc, device=device, precision=arith, backend="torch").session()
            flops = count_flops(lambda: counter.upscale_array(arr, indices=list(range(b)), resets=[True] * b))
            del counter
        seconds = median_seconds(call, runs, device=engine.device, warmup=0) / b
        tile = engine.tile_for((b, desc.in_ch, h, w))
        dev, used = engine.device, engine.backend
        del session, engine  # the pipeline loads its own; two copies of a large model need not coexist
        say(f"peak: {name} matmul on the same device")
        peak = matmul_peak_gflops(PRECISIONS[arith], dev, runs=runs)
        say(f"pipeline: vsr upscale, {frames} and {b} frames, {runs} runs each")
        out = Path(tmp) / "out.mkv"
        whole, first = [], []
        for _ in range(runs):
            whole.append(pipeline_seconds(clip, out, frames=frames, model=model, device=device, precision=name,
                                          batch=b, codec=codec, backend=used))
            first.append(pipeline_seconds(clip, out, frames=b, model=model, device=device, precision=name,
                                          batch=b, codec=codec, backend=used))
    marginal = statistics.median(whole) - statistics.median(first)
    # timing noise can make the difference meaningless on very short runs: then the plain rate, which
    # includes the one-off costs and so errs low
    pipeline_fps = (frames - b) / marginal if marginal > 0 else frames / statistics.median(whole)
    gflops = flops / b / seconds / 1e9
    return BenchResult(model=model, size=f"{w}x{h}", out_size=f"{ow}x{oh}", precision=name,
                       device=str(dev), backend=used, threads=torch.get_num_threads(), runs=runs, batch=b, tile=tile,
                       seconds_per_frame=seconds, model_fps=1 / seconds, flops_per_frame=flops / b, gflops=gflops,
                       peak_gflops=peak, peak_ratio=gflops / peak, matmul=matmul_size(dev), pipeline_frames=frames,
                       pipeline_codec=codec or "libx264", pipeline_fps=pipeline_fps,
                       pipeline_ratio=pipeline_fps * seconds, clip=shown_clip)


def backends(*, model: str = zoo.DEFAULT_MODEL, size: tuple[int, int] | None = None, batch: int = 1,
             say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """``vsr bench --backends``: every way this CPU can run the model on frames of ``size``, timed and
    compared with PyTorch fp32 as `vsr upscale` does before it chooses (vsr.engine.autotune); the choice
    is kept for `vsr upscale` as its own measurement would be."""
    desc, _ = zoo.resolve(model)
    w, h = size or parse_size(DEFAULT_SIZE)
    shape = (batch, desc.in_ch, h, w)
    engine = Upscaler(desc, device="cpu")
    say(f"backends: {model} at {w}x{h}, each for about {autotune.MEASURE_S:g} s after a warm-up")
    picture = scene_frames(w, h, 1)[0]  # the demo's scene: edges, text, gradients
    rows, _ = autotune.measure(engine, shape, every=True, picture=picture)
    best = autotune.remember(engine, shape, rows)
    mh, mw = autotune.measured_shape(shape)[2:]
    return {"model": model, "size": f"{w}x{h}", "measured_size": f"{mw}x{mh}", "cpu": autotune.cpu(),
            "threads": torch.get_num_threads(), "faithful_db": autotune.FAITHFUL_DB,
            # psnr null: identical to PyTorch fp32 (JSON has no infinity)
            "rows": [{**asdict(r), "psnr": None if r.psnr == float("inf") else r.psnr} for r in rows],
            "chosen": {"backend": best.backend, "precision": best.precision}}


def backend_lines(table: dict[str, Any]) -> list[str]:
    cpu = table["cpu"]
    lines = [f"{table['model']} at {table['size']} (measured on {table['measured_size']}) on {cpu['name']} "
             f"({' '.join(cpu['flags']) or 'no listed extensions'}), {table['threads']} threads",
             f"{'backend':10s} {'precision':9s} {'s/frame':>9s} {'frames/s':>9s} {'PSNR vs fp32':>13s}"]
    for r in table["rows"]:
        if r["error"]:
            lines.append(f"{r['backend']:10s} {r['precision']:9s} failed: {r['error']}")
            continue
        shown = "identical" if r["psnr"] is None else f"{r['psnr']:.1f} dB"
        lines.append(f"{r['backend']:10s} {r['precision']:9s} {r['seconds']:9.4f} {1 / r['seconds']:9.2f} "
                     f"{shown:>13s}")
    chosen = table["chosen"]
    lines.append(f"chosen: {chosen['backend']} {chosen['precision']}, the fastest within "
                 f"{table['faithful_db']:g} dB of PyTorch fp32 (what --backend auto --precision auto runs here)")
    return lines


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.size) if args.size is not None else None

    def say(line: str) -> None:
        if not args.json:
            print(f"vsr: bench: {line}", file=sys.stderr, flush=True)

    if args.backends:
        table = backends(model=args.model, size=size, batch=args.batch or 1, say=say)
        print(json.dumps(table) if args.json else "\n".join(backend_lines(table)))
        return 0
    result = measure(model=args.model, size=size, precision=args.precision, device=args.device,
                     frames=args.frames, runs=args.runs, batch=args.batch, codec=args.codec, clip=args.clip,
                     backend=args.backend, say=say)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print("\n".join(result.lines()))
    return 0
