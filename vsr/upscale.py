"""The orchestrator: resolves the model once, then runs image, video and folder jobs through the engine."""
from __future__ import annotations

import os
import queue
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from . import catalog, images, zoo
from .engine import Upscaler
from .errors import VsrError
from .projection import FasterOptions, Projection
from .yamlfile import read_mapping
from .video import (VIDEO_SUFFIXES, IngestOptions, OutputPlan, VideoOptions, check_encoder_options, plan_output,
                    transcode)
from .video.options import chroma
from .video.repair import RepairOptions
from .video.transcode import Part
from .video.resume import output_lock, recorded_identity, work_dir_for


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


class _Job:
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
        self.faster = FasterOptions(desc=desc, model=opts.model, card_name=card.name if card else None,
                                    scale=self.scale)

    @property
    def scale(self) -> float:
        return self.opts.scale or self.engine.desc.scale

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

    def video(self, src: Path, plan: OutputPlan, report: Report, helpers: Sequence[_Job] = (),
              part: Part | None = None) -> Path:
        """``helpers``: jobs on other devices that take batches of this video too (a network without
        memory only: its output does not depend on which engine computed which batch). ``part``: only
        that segment, left in the work folder for the run that joins the video (see transcode)."""
        resume = self.video_options.resume
        if resume:  # continue unfinished work with what it was run with
            for job in (self, *helpers):
                job.engine.adopt((recorded_identity(work_dir_for(plan.path)) or {}).get("process"))
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
        result = transcode(src, plan.path, process, self.scale, self._projected(src.name), plan=plan,
                           identity=self.identity if resume else None, segment_frames=self.opts.segment_frames,
                           context_frames=desc.context_frames, detect_cuts=self.engine.stateful,
                           parallel=len(jobs), part=part)
        report.frames += result.frames
        report.decode_errors += result.decode_errors
        report.notes += [f"{src.name}: {n}" for n in result.notes]
        if result.repairs is not None:
            report.repairs = {str(src): result.repairs}
        return result.output

    def _peers(self, helpers: Sequence[_Job], plan: OutputPlan, report: Report, name: str) -> list[_Job]:
        """The helpers whose batches come out exactly as this job's would (same identity but for the device
        index, and the same tile at this size): the manifest records one identity for the whole video."""
        if self.engine.stateful or not helpers:
            return []
        shape = (self.video_options.batch_size, 3, plan.source.height, plan.source.width)

        def computes(job: _Job) -> tuple:
            return job.identity(), job.engine.tile_for(shape)

        peers = [h for h in helpers if computes(h) == computes(self)]
        if len(peers) < len(helpers):
            others = ", ".join(str(h.engine.device) for h in helpers if h not in peers)
            report.notes.append(f"{name}: not spread over {others}: those devices compute differently (precision, "
                                f"backend or tile) from {self.engine.device}")
        return peers

    def _projected(self, name: str) -> VideoOptions:
        """The video options with the projection of the file's time fed by its progress (not when quiet)."""
        options = self.video_options
        if options.quiet:
            return options
        projection = Projection(name=name, device=self.engine.device, hint=self.faster,
                                write=lambda line: tqdm.write(f"vsr: {line}", file=sys.stderr))
        given = options.progress

        def progress(done: int, total: int | None) -> None:
            projection.progress(done, total)
            if given is not None:
                given(done, total)
        return replace(options, progress=progress)

    def image(self, src: Path, dst: Path) -> int:
        img = images.read_image(src)
        engine = self.engine
        h, w = img.shape[:2]
        rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        out = engine.upscale_array(rgb[None])[0]
        if img.ndim == 2:  # grey in, grey out
            out = _mean_channels(out)
        elif img.shape[2] == 4:  # alpha goes through the network on its own, as a grey image
            alpha = engine.upscale_array(np.repeat(img[None, :, :, 3:], 3, axis=3))[0]
            out = np.dstack([out, _mean_channels(alpha)])
        out = images.resize(out, round(w * self.scale), round(h * self.scale))
        images.write_image(dst, out)
        return 1


def default_batch(device_type: str) -> int:
    """Video frames per network call: one on a CPU (a frame already fills its cores), four on a GPU."""
    return 1 if device_type == "cpu" else 4


def _mean_channels(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).mean(axis=-1).round().astype(a.dtype)


def default_output(src: Path, scale_label: str) -> Path:
    if src.is_dir():
        return src.with_name(f"{src.name}_{scale_label}")
    return src.with_name(f"{src.stem}_{scale_label}{src.suffix}")


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in images.IMAGE_SUFFIXES


def _is_media(p: Path) -> bool:
    return _is_image(p) or p.suffix.lower() in VIDEO_SUFFIXES


def upscale(src: Path, dst: Path | None, opts: UpscaleOptions) -> Report:
    start = time.perf_counter()
    src = Path(src)
    _check_input(src)
    label = f"x{opts.scale:g}" if opts.scale else "vsr"
    dst = Path(dst) if dst is not None else default_output(src, label)
    if dst.resolve() == src.resolve():
        raise VsrError(f"the output {dst} is the input; choose another -o")
    report = Report()
    if src.is_dir():
        pairs = _folder_pairs(src, dst)
        if not pairs:
            raise VsrError(f"{src} holds no images or videos ({', '.join(images.IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
    else:
        if dst.is_dir():
            dst = dst / src.name
        if dst.resolve() == src.resolve():
            raise VsrError(f"the output {dst} is the input; choose another -o")
        if not _is_media(src):
            raise VsrError(f"{src}: unsupported file type {src.suffix or '(none)'}; "
                           f"images: {' '.join(images.IMAGE_SUFFIXES)}; videos: {' '.join(VIDEO_SUFFIXES)}")
        pairs = [(src, dst)]
    _check_writable(dst if src.is_dir() else dst.parent)
    if not all(_is_image(s) for s, _ in pairs):
        check_encoder_options(opts.video)  # a wrong --codec, --crf or --pix-fmt fails before any work
    pairs, plans = distinct_outputs(pairs, opts.video, report, one_file=not src.is_dir())
    if opts.cluster:  # the workers load the model; a bad one still fails here, before any file is touched
        from . import cluster

        zoo.resolve(opts.model, opts.scale)
        with tqdm(total=len(pairs), desc="files", unit="file", disable=opts.quiet, file=sys.stderr) as bar:
            cluster.run(pairs, opts, report, progress=bar.update)
        report.wall_seconds = time.perf_counter() - start
        return _one_file_repairs(report, src)
    devices = opts.devices or [opts.device]
    # one engine per device (a bad model fails before any file is touched); files bars only for one device
    jobs = [_Job(replace(opts, device=dev, quiet=opts.quiet or len(devices) > 1)) for dev in devices]
    todo = iter(pairs)
    lock = threading.Lock()
    with tqdm(total=len(pairs), desc="files", unit="file", disable=opts.quiet or len(pairs) == 1,
              file=sys.stderr) as bar:
        def work(job: _Job) -> None:
            while True:
                with lock:
                    s, d = next(todo, (None, None))
                if s is None:
                    return
                # one file: every device takes batches of it; several: each device its own files
                part = restore_one(job, s, d, plan=plans.get(s), raise_errors=len(pairs) == 1,
                                   helpers=[j for j in jobs if j is not job] if len(pairs) == 1 else ())
                with lock:
                    merge(report, part, str(s))
                    bar.update()

        if len(jobs) == 1:
            work(jobs[0])
        else:
            with ThreadPoolExecutor(len(jobs)) as pool:
                list(pool.map(work, jobs))
    for job in jobs:
        add_engine_stats(report, job)
    report.wall_seconds = time.perf_counter() - start
    return _one_file_repairs(report, src)


def _one_file_repairs(report: Report, src: Path) -> Report:
    """One file's report gives its repairs as they are; a folder's, by input."""
    if not src.is_dir() and report.repairs:
        report.repairs = next(iter(report.repairs.values()))
    return report


def repair_only(src: Path, dst: Path | None, opts: UpscaleOptions) -> Report:
    """`vsr repair`: one video through the ingest filters and tape repair alone, no network, every other
    stream copied as `vsr upscale` copies them (for people who upscale elsewhere)."""
    start = time.perf_counter()
    src = Path(src)
    _check_input(src)
    if src.is_dir() or src.suffix.lower() not in VIDEO_SUFFIXES:
        raise VsrError(f"{src}: vsr repair takes one video ({' '.join(VIDEO_SUFFIXES)})")
    dst = Path(dst) if dst is not None else default_output(src, "repaired")
    if dst.is_dir():
        dst = dst / src.name
    _check_writable(dst.parent)
    check_encoder_options(opts.video)
    report = Report()
    plan = distinct_outputs([(src, dst)], opts.video, report, one_file=True)[1].get(src)
    if plan is None:  # not a readable video: probing it again says why in one line
        plan = plan_output(src, dst, opts.video)
    if plan.finished() is not None and not opts.overwrite:
        report.skipped.append(str(plan.finished()))
        return report
    video = replace(opts.video, quiet=opts.quiet or opts.video.quiet)
    result = transcode(src, dst, lambda frames, indices, resets: frames, 1.0, video, plan=plan,
                       identity={"repair only": True} if video.resume else None)
    report.outputs.append(str(result.output))
    report.frames, report.decode_errors = result.frames, result.decode_errors
    report.notes += [f"{src.name}: {n}" for n in result.notes]
    report.repairs = result.repairs
    report.wall_seconds = time.perf_counter() - start
    return report


def restore_one(job: _Job, s: Path, d: Path, *, raise_errors: bool, helpers: Sequence[_Job] = (),
                plan: OutputPlan | None = None) -> Report:
    """One file of a job: its own report (a failed file is a row saying why, unless ``raise_errors``).
    ``plan``: a video's output plan when the caller made it already."""
    report = Report()
    t0 = time.perf_counter()
    try:
        _check_input(s)
        # planned once: the check for a finished output looks where the output is written
        plan = None if _is_image(s) else plan or plan_output(s, d, job.video_options)
        done = (d if d.exists() else None) if plan is None else plan.finished()
        if done is not None and not job.opts.overwrite:
            # a run stopped between renaming its output into place and removing its work folder; a run
            # writing it anew (--overwrite) holds the lock and owns that folder
            try:
                with output_lock(d if plan is None else plan.path):
                    shutil.rmtree(work_dir_for(done), ignore_errors=True)
            except VsrError:
                pass
            report.skipped.append(str(done))
            report.rows.append((str(s), "skipped", 0, 0.0, str(done)))
            return report
        if plan is None:
            report.frames += job.image(s, d)
        else:
            d = job.video(s, plan, report, helpers)
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


def add_engine_stats(report: Report, job: _Job) -> None:
    stats = job.engine.stats
    report.model_seconds += stats.model_seconds
    report.nonfinite_recomputed += stats.nonfinite_recomputed
    report.nonfinite_fallback += stats.nonfinite_fallback


def merge(report: Report, part: Report, src: str) -> None:
    """One file's report into the job's, its row named as the user named the input."""
    report.outputs += part.outputs
    report.skipped += part.skipped
    report.failed.update({src: reason for reason in part.failed.values()})
    for name in ("frames", "decode_errors", "model_seconds", "nonfinite_recomputed", "nonfinite_fallback"):
        setattr(report, name, getattr(report, name) + getattr(part, name))
    report.notes += [n for n in part.notes if n not in report.notes]
    if part.repairs:
        report.repairs = {**(report.repairs or {}), **{src: r for r in part.repairs.values()}}
    report.rows += [(src, *row[1:]) for row in part.rows]


def distinct_outputs(pairs: list[tuple[Path, Path]], options: VideoOptions, report: Report, *, one_file: bool
                     ) -> tuple[list[tuple[Path, Path]], dict[Path, OutputPlan]]:
    """Each input's output, settled before any work: no output (nor the MKV it falls back to when its
    container refuses a stream) is an input or another input's. In a folder, ``tape.avi`` and ``tape.mkv``
    would both write ``tape.mkv``: the file whose output keeps the name it was given has it, the other is
    renamed (``tape_avi.mkv``, with a note), the same way on every run so that a folder job resumes. One
    file whose output could be its input is refused. Returns the pairs and the videos' plans (each video
    is probed once)."""
    plans: dict[Path, OutputPlan] = {}

    def paths(s: Path, d: Path) -> list[Path]:  # where the output goes, then where it may fall back to
        if _is_image(s):
            return [d.absolute()]
        try:
            plan = plans[s] = plan_output(s, d, options)
        except Exception:  # an unreadable video: its own job says why
            return []
        return [p.absolute() for p in (plan.path, plan.mux.fallback_path) if p is not None]

    taken = {s.absolute() for s, _ in pairs}
    if one_file:
        (s, d), = pairs
        if taken & set(paths(s, d)):
            raise VsrError(f"{s}: the output {d.name} may be written as {s.name} (as MKV, when its container "
                           "cannot hold every stream), which is the input; choose another -o name")
        return pairs, plans
    wanted = [paths(s, d) for s, d in pairs]
    out = list(pairs)
    # outputs that keep the name they were given claim it first; then the others, in folder order
    for i in sorted(range(len(pairs)), key=lambda i: wanted[i][:1] != [pairs[i][1].absolute()]):
        (s, given), d, claim, n = pairs[i], pairs[i][1], wanted[i], 1
        while taken & set(claim):
            d = given.with_name(f"{given.stem}_{given.suffix[1:]}{f'_{n}' if n > 1 else ''}{given.suffix}")
            claim, n = paths(s, d), n + 1
        if d != given:
            report.notes.append(f"{s.name}: output named {claim[0].name}: its own name is another file's output "
                                "or an input")
        out[i] = (s, d)
        taken |= set(claim)
    return out, plans


def _folder_pairs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """Media files under ``src`` and their mirrored outputs under ``dst`` (which is never scanned).
    Linked folders are followed, each real folder once, so a link to a folder above is no endless loop."""
    dst_r = dst.resolve()
    seen: set[str] = set()
    pairs = []
    for root, dirs, files in os.walk(src, followlinks=True):
        seen.add(os.path.realpath(root))
        dirs[:] = sorted(d for d in dirs if os.path.realpath(Path(root) / d) not in seen | {str(dst_r)})
        for name in sorted(files):
            p = Path(root) / name
            if _is_media(p) and not name.startswith("."):
                pairs.append((p, dst / p.relative_to(src)))
    return pairs


def _check_input(src: Path) -> None:
    """An input that cannot be read says why in one line (broken links; unreadable files are refused
    where they are opened)."""
    if src.is_symlink() and not src.exists():
        raise VsrError(f"{src} is a broken symbolic link (its target {os.readlink(src)} does not exist, or "
                       "the links form a loop); fix the link or remove it")
    if not src.exists():
        raise VsrError(f"{src} does not exist")


def _check_writable(folder: Path) -> None:
    """Refuse before any work when the output cannot be written: the nearest folder that exists (the rest
    is created) must be writable."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise VsrError(f"cannot write to {folder}: {existing} is a file, not a folder; choose another -o")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise VsrError(f"cannot write to {existing} (permission denied); choose another -o or ask for write "
                       "permission there")


# A restoration preset (pipelines/NAME.yml): ingest filters, model and encoding for one kind of source.
PRESET_KEYS: dict[str, set[str] | None] = {
    "kind": None, "name": None, "description": None, "model": None, "scale": None,
    "ingest": {"deinterlace", "double_rate", "crop", "colour", "repair"},
    "encode": {"codec", "crf", "encoder_preset", "pix_fmt", "options", "keep_sar"},
}


def options_with_preset(preset_name: str | None, *, encoder_options: dict[str, str], quiet: bool, resume: bool,
                        **given: Any) -> UpscaleOptions:
    """The job's options: what the user gave (None: not given) wins over the preset, the preset over
    the defaults."""
    preset = load_preset(preset_name) if preset_name else {}
    ing, enc = preset.get("ingest", {}), preset.get("encode", {})

    def pick(key: str, from_preset: Any, default: Any) -> Any:
        mine = given.get(key)
        return mine if mine is not None else (from_preset if from_preset is not None else default)

    codec = pick("codec", enc.get("codec"), "libx264")
    if enc.get("codec") not in (None, codec):  # a preset's CRF, speed and options are for its own codec
        enc = {k: v for k, v in enc.items() if k == "keep_sar"}

    crop = pick("crop", ing.get("crop"), "off")
    mode = pick("repair", ing.get("repair"), "off")
    repair = RepairOptions(mode="off" if mode is False else str(mode), chroma_delay=given.get("chroma_delay"))
    ingest = IngestOptions(deinterlace=pick("deinterlace", ing.get("deinterlace"), "auto"),
                           double_rate=bool(pick("double_rate", ing.get("double_rate"), False)),
                           crop=None if crop in ("off", False) else str(crop),
                           colour=pick("colour", ing.get("colour"), "auto"), repair=repair)
    crf = pick("crf", enc.get("crf"), None)
    video = VideoOptions(codec=codec,
                         crf=float(crf) if crf is not None else None,
                         preset=pick("encoder_preset", enc.get("encoder_preset"), None),
                         pix_fmt=pick("pix_fmt", enc.get("pix_fmt"), None),
                         encoder_options={**{str(k): str(v) for k, v in (enc.get("options") or {}).items()},
                                          **encoder_options},
                         keep_sar=given["keep_sar"] or bool(enc.get("keep_sar", False)),
                         max_frames=given["max_frames"], ingest=ingest, resume=resume)
    scale = pick("scale", preset.get("scale"), None)
    return UpscaleOptions(model=pick("model", preset.get("model"), zoo.DEFAULT_MODEL),
                          temperature=given["temperature"], seed=given["seed"], ensemble=given["ensemble"] or 1,
                          scale=float(scale) if scale is not None else None, device=given["device"],
                          precision=given["precision"], backend=given.get("backend") or "auto", tile=given["tile"],
                          overwrite=given["overwrite"],
                          quiet=quiet, batch=given["batch"], video=video, segment_frames=given["segment_frames"],
                          cluster=given.get("cluster"), devices=given.get("devices"))


def load_preset(name: str) -> dict[str, Any]:
    """A preset by name (shipped in pipelines/) or path, checked strictly: an unknown key is an error."""
    path = Path(name).expanduser()
    if path.suffix not in (".yml", ".yaml") or not path.is_file():
        path = catalog.find(name, "preset")  # training recipes share pipelines/; each file says its kind
    data = read_mapping(path, "preset")
    if catalog.kind_of(data, path, default="preset") != "preset":
        raise VsrError(f"{path} is a training recipe (kind: recipe), not a preset; use it with vsr train")
    for key, value in data.items():
        if key not in PRESET_KEYS:
            raise VsrError(f"{path}: unknown key {key!r}; expected one of: {', '.join(PRESET_KEYS)}")
        allowed = PRESET_KEYS[key]
        if allowed is not None:
            if not isinstance(value, dict):
                raise VsrError(f"{path}: {key} must be a mapping, got {type(value).__name__}")
            for sub in value:
                if sub not in allowed:
                    raise VsrError(f"{path}: unknown key '{key}.{sub}'; expected one of: {', '.join(sorted(allowed))}")
    return data
