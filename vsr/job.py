"""The unit of work: one model on one device (a :class:`Job`) restoring one file at a time, each file's
outcome a :class:`Report` that merges into the run's.

``vsr.upscale`` plans a run and hands its files to jobs on local devices; ``vsr.cluster`` hands them to
jobs on the workers of a Ray cluster. One file alone, with progress::

    report = restore_file("tape.avi", "tape_vsr.mkv", UpscaleOptions(model="compact"),
                          progress=lambda done, total: print(done, total))
"""
from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import images, zoo
from .engine import Upscaler
from .engine.upscaler import EngineStats
from .errors import VsrError
from .projection import FasterOptions, Projection
from .video import OutputPlan, Part, VideoOptions, chroma, clear_leftovers, plan_output, transcode
from .video.options import ProgressFn, for_cpu
from .video.frames import frame_at


@dataclass
class UpscaleOptions:
    model: str = zoo.DEFAULT_MODEL
    scale: float | None = None  # output scale; default the model's own
    temperature: float | None = None  # sampled models: latent temperature (default 0: the mean image)
    seed: int | None = None  # sampled models: seed of the latents (default 0)
    ensemble: int = 1  # 4 or 8: flipped (and transposed) passes averaged
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"  # auto: OpenVINO for plain networks on the CPU where it is installed
    tile: str | int = "auto"
    overwrite: bool = False
    quiet: bool = False
    batch: int | None = None  # video frames per network call; default 1 on the CPU, 4 on a GPU
    video: VideoOptions = field(default_factory=VideoOptions)  # ingest, encoding and resume of video outputs
    segment_frames: int | None = None  # resumable videos are cut into segments of this many frames
    cluster: str | None = None  # a Ray cluster's address (or auto): each file a task on it
    devices: list[str] | None = None  # several devices, one engine each, the files spread across them


@dataclass
class Report:
    outputs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # input -> one-line reason
    frames: int = 0  # images, or video frames
    decode_errors: int = 0  # video frames that could not be decoded
    model_seconds: float = 0.0
    wall_seconds: float = 0.0
    nonfinite_recomputed: int = 0
    nonfinite_fallback: int = 0
    notes: list[str] = field(default_factory=list)
    # what tape repair found (vsr.video.repair): one file's, or each file's by input in a folder's report
    repairs: dict[str, Any] | None = None
    rows: list[tuple[str, str, int, float, str]] = field(default_factory=list)  # input, status, frames, s, detail

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "rows"}

    def table(self) -> str:
        """One line per file: status, frames, seconds, output or reason; then the totals."""
        width = max(len(r[0]) for r in self.rows)
        lines = [f"{'file'.ljust(width)}  status   frames  seconds  output / reason"]
        lines += [f"{src.ljust(width)}  {status:7s}  {frames:6d}  {secs:7.1f}  {detail}"
                  for src, status, frames, secs, detail in self.rows]
        lines.append(f"{len(self.outputs)} done, {len(self.skipped)} skipped (exist; --overwrite redoes them), "
                     f"{len(self.failed)} failed; {self.frames} frames in {self.wall_seconds:.1f} s")
        return "\n".join(lines)

    def merge(self, part: Report, src: str) -> None:
        """One file's report into the job's, its row named as the user named the input."""
        self.outputs += part.outputs
        self.skipped += part.skipped
        self.failed.update({src: reason for reason in part.failed.values()})
        for name in ("frames", "decode_errors", "model_seconds", "nonfinite_recomputed", "nonfinite_fallback"):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        self.notes += [n for n in part.notes if n not in self.notes]
        if part.repairs:
            self.repairs = {**(self.repairs or {}), **{src: r for r in part.repairs.values()}}
        self.rows += [(src, *row[1:]) for row in part.rows]

    def add_engine_stats(self, stats: EngineStats) -> None:
        self.model_seconds += stats.model_seconds
        self.nonfinite_recomputed += stats.nonfinite_recomputed
        self.nonfinite_fallback += stats.nonfinite_fallback


class Job:
    """One model on one device, applied to each file of a job."""

    def __init__(self, opts: UpscaleOptions) -> None:
        self.opts = opts
        desc, card = zoo.resolve(opts.model, opts.scale)
        if desc.in_ch != 3 or desc.out_ch != 3:
            raise VsrError(f"model {opts.model} has {desc.in_ch} input channels; only RGB models are supported")
        self.engine = Upscaler(desc, device=opts.device, precision=opts.precision, backend=opts.backend,
                               tile=opts.tile, temperature=opts.temperature, seed=opts.seed, ensemble=opts.ensemble)
        batch = opts.batch or default_batch(self.engine.device.type)
        self.video_options = replace(opts.video, batch_size=batch, quiet=opts.quiet or opts.video.quiet)
        if self.engine.device.type == "cpu":
            self.video_options = for_cpu(self.video_options)
        self.faster = FasterOptions(desc=desc, model=opts.model, card_name=card.name if card else None,
                                    scale=self.scale)

    @property
    def scale(self) -> float:
        return self.opts.scale or self.engine.desc.scale

    def restore(self, s: Path, d: Path, *, raise_errors: bool = False, helpers: Sequence[Job] = (),
                plan: OutputPlan | None = None, progress: ProgressFn | None = None) -> Report:
        """One file: its own report (a failed file is a row saying why, unless ``raise_errors``).
        ``plan``: a video's output plan when the caller made it already. ``progress(done, total)``: a
        video's frames as they are encoded (as VideoOptions.progress), an image's (1, 1) when written."""
        report = Report()
        t0 = time.perf_counter()
        try:
            check_input(s)
            # planned once: the check for a finished output looks where the output is written
            plan = None if is_image(s) else plan or plan_output(s, d, self.video_options)
            done = (d if d.exists() else None) if plan is None else plan.finished()
            if done is not None and not self.opts.overwrite:
                clear_leftovers(done, d if plan is None else plan.path)
                report.skipped.append(str(done))
                report.rows.append((str(s), "skipped", 0, 0.0, str(done)))
                return report
            if plan is None:
                report.frames += self.image(s, d)
                if progress is not None:
                    progress(1, 1)
            else:
                d = self.video(s, plan, report, helpers, progress=progress)
            report.outputs.append(str(d))
            report.rows.append((str(s), "done", report.frames, time.perf_counter() - t0, str(d)))
        except Exception as e:  # a folder goes on past a failed file; one file reports it to the caller
            if raise_errors:
                raise
            reason = " ".join(str(e).split())
            if not isinstance(e, (VsrError, OSError)):
                reason = f"{type(e).__name__}: {reason}"
            report.failed[str(s)] = reason
            report.rows.append((str(s), "failed", 0, time.perf_counter() - t0, reason))
        return report

    def _resized(self, out: np.ndarray, h: int, w: int) -> np.ndarray:
        """The network's output resampled to a --scale of the user's."""
        size = (round(w * self.scale), round(h * self.scale))
        if out.shape[1:3] != size[::-1]:
            out = np.stack([images.resize(f, *size) for f in out])
        return out

    def identity(self) -> dict[str, Any]:
        """What decides this job's pixels besides the video options: a resumed video must not mix the
        segments of two models, precisions, devices, tiles or temperatures."""
        return {**self.engine.identity(), "scale": self.scale}

    def video(self, src: Path, plan: OutputPlan, report: Report, helpers: Sequence[Job] = (),
              part: Part | None = None, progress: ProgressFn | None = None) -> Path:
        """``helpers``: jobs on other devices that take batches of this video too (a network without
        memory only: its output does not depend on which engine computed which batch). ``part``: only
        that segment, left in the work folder for the run that joins the video (see transcode)."""
        resume = self.video_options.resume
        if resume:  # continue unfinished work with what it was run with
            for job in (self, *helpers):
                job.engine.adopt((plan.recorded_identity() or {}).get("process"))
        shape = (self.video_options.batch_size, self.engine.desc.in_ch, plan.source.height, plan.source.width)
        # the fastest way on this machine (after adopt: a resumed job keeps its own), judged on a frame of it
        picture = frame_at(src, plan.source, 0.1) if any(j.engine.tunable for j in (self, *helpers)) else None
        for job in (self, *helpers):
            job.engine.tune(shape, say=self._say, picture=picture)
        jobs = [self, *self._peers(helpers, plan, report, src.name)]
        # one video: frame numbers and the recurrent state; a free session per batch in flight
        free: queue.SimpleQueue = queue.SimpleQueue()
        for job in jobs:
            free.put(job.engine.session())
        grey = chroma(plan.source.pix_fmt) == ""

        def process(frames: np.ndarray, indices: list[int], resets: list[bool]) -> np.ndarray:
            session = free.get()
            try:
                out = session.upscale_array(frames, indices=indices, resets=resets)
            finally:
                free.put(session)
            out = self._resized(out, *frames.shape[1:3])
            # grey in, grey out: the network's faint colour would become chroma the input never had
            return np.repeat(_mean_channels(out)[..., None], 3, axis=-1) if grey else out

        desc = self.engine.desc
        result = transcode(src, plan.path, process, self.scale, self._projected(src.name, progress), plan=plan,
                           identity=self.identity if resume else None, segment_frames=self.opts.segment_frames,
                           context_frames=desc.context_frames, detect_cuts=self.engine.stateful,
                           parallel=len(jobs), part=part)
        report.frames += result.frames
        report.decode_errors += result.decode_errors
        report.notes += [f"{src.name}: {n}" for n in result.notes]
        if result.repairs is not None:
            report.repairs = {str(src): result.repairs}
        return result.output

    def _peers(self, helpers: Sequence[Job], plan: OutputPlan, report: Report, name: str) -> list[Job]:
        """The helpers whose batches come out exactly as this job's would (same identity but for the device
        index, and the same tile at this size): the manifest records one identity for the whole video."""
        if self.engine.stateful or not helpers:
            return []
        shape = (self.video_options.batch_size, 3, plan.source.height, plan.source.width)

        def computes(job: Job) -> tuple:
            return job.identity(), job.engine.tile_for(shape)

        peers = [h for h in helpers if computes(h) == computes(self)]
        if len(peers) < len(helpers):
            others = ", ".join(str(h.engine.device) for h in helpers if h not in peers)
            report.notes.append(f"{name}: not spread over {others}: those devices compute differently (precision, "
                                f"backend or tile) from {self.engine.device}")
        return peers

    def _projected(self, name: str, progress: ProgressFn | None = None) -> VideoOptions:
        """The video options with the projection of the file's time fed by its progress (not when quiet),
        and ``progress`` (when given) instead of the options' own."""
        options = self.video_options if progress is None else replace(self.video_options, progress=progress)
        if options.quiet:
            return options
        projection = Projection(name=name, device=self.engine.device, hint=self.faster, write=self._say)
        given = options.progress

        def both(done: int, total: int | None) -> None:
            projection.progress(done, total)
            if given is not None:
                given(done, total)
        return replace(options, progress=both)

    def _say(self, line: str) -> None:
        if not self.opts.quiet:
            tqdm.write(f"vsr: {line}", file=sys.stderr)

    def image(self, src: Path, dst: Path) -> int:
        img = images.read_image(src)
        engine = self.engine
        h, w = img.shape[:2]
        rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        engine.tune((1, engine.desc.in_ch, h, w), say=self._say, picture=rgb)
        out = engine.upscale_array(rgb[None])[0]
        if img.ndim == 2:  # grey in, grey out
            out = _mean_channels(out)
        elif img.shape[2] == 4:  # alpha goes through the network on its own, as a grey image
            alpha = engine.upscale_array(np.repeat(img[None, :, :, 3:], 3, axis=3))[0]
            out = np.dstack([out, _mean_channels(alpha)])
        out = images.resize(out, round(w * self.scale), round(h * self.scale))
        images.write_image(dst, out)
        return 1


def restore_file(src: Path | str, dst: Path | str, opts: UpscaleOptions, *,
                 progress: ProgressFn | None = None) -> Report:
    """One file with a model of its own, as a folder job restores each file: a file that fails is a
    failed row of the report, not an exception (a bad model still raises, before the file is touched)."""
    job = Job(opts)
    report = job.restore(Path(src), Path(dst), progress=progress)
    report.add_engine_stats(job.engine.stats)
    return report


def default_batch(device_type: str) -> int:
    """Video frames per network call: one on a CPU (a frame already fills its cores), four on a GPU."""
    return 1 if device_type == "cpu" else 4


def _mean_channels(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).mean(axis=-1).round().astype(a.dtype)


def is_image(p: Path) -> bool:
    return p.suffix.lower() in images.IMAGE_SUFFIXES


def check_input(src: Path) -> None:
    """An input that cannot be read says why in one line (broken links; unreadable files are refused
    where they are opened)."""
    if src.is_symlink() and not src.exists():
        raise VsrError(f"{src} is a broken symbolic link (its target {os.readlink(src)} does not exist, or "
                       "the links form a loop); fix the link or remove it")
    if not src.exists():
        raise VsrError(f"{src} does not exist")
