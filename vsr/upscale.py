"""The orchestrator: checks a run's inputs and outputs, plans them once, then hands each file to a job
(vsr.job) on each local device, or to the workers of a cluster (vsr.cluster)."""
from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import catalog, images, zoo
from .engine.device import select_device
from .errors import VsrError
from .job import Job, Report, UpscaleOptions, check_input, is_image
from .yamlfile import read_mapping
from .video import (VIDEO_SUFFIXES, IngestOptions, OutputPlan, RepairOptions, VideoOptions, check_encoder_options,
                    plan_output, transcode)
from .video.options import for_cpu


def default_output(src: Path, scale_label: str) -> Path:
    if src.is_dir():
        return src.with_name(f"{src.name}_{scale_label}")
    return src.with_name(f"{src.stem}_{scale_label}{src.suffix}")


def _is_media(p: Path) -> bool:
    return is_image(p) or p.suffix.lower() in VIDEO_SUFFIXES


def upscale(src: Path, dst: Path | None, opts: UpscaleOptions) -> Report:
    start = time.perf_counter()
    src = Path(src)
    check_input(src)
    label = f"x{opts.scale:g}" if opts.scale else "vsr"
    dst = Path(dst) if dst is not None else default_output(src, label)
    if dst.resolve() == src.resolve():
        raise VsrError(f"the output {dst} is the input; choose another -o")
    report = Report()
    if not opts.cluster and all(select_device(d).type == "cpu" for d in opts.devices or [opts.device]):
        opts = replace(opts, video=for_cpu(opts.video))  # planned with the preset the encoder runs
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
    if not all(is_image(s) for s, _ in pairs):
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
    jobs = [Job(replace(opts, device=dev, quiet=opts.quiet or len(devices) > 1)) for dev in devices]
    todo = iter(pairs)
    lock = threading.Lock()
    with tqdm(total=len(pairs), desc="files", unit="file", disable=opts.quiet or len(pairs) == 1,
              file=sys.stderr) as bar:
        def work(job: Job) -> None:
            while True:
                with lock:
                    s, d = next(todo, (None, None))
                if s is None:
                    return
                # one file: every device takes batches of it; several: each device its own files
                part = job.restore(s, d, plan=plans.get(s), raise_errors=len(pairs) == 1,
                                   helpers=[j for j in jobs if j is not job] if len(pairs) == 1 else ())
                with lock:
                    report.merge(part, str(s))
                    bar.update()

        if len(jobs) == 1:
            work(jobs[0])
        else:
            with ThreadPoolExecutor(len(jobs)) as pool:
                list(pool.map(work, jobs))
    for job in jobs:
        report.add_engine_stats(job.engine.stats)
    report.wall_seconds = time.perf_counter() - start
    return _one_file_repairs(report, src)


def _one_file_repairs(report: Report, src: Path) -> Report:
    """One file's report gives its repairs as they are; a folder's, by input."""
    if not src.is_dir() and report.repairs:
        report.repairs = next(iter(report.repairs.values()))
    return report


def repair_only(src: Path, dst: Path | None, opts: UpscaleOptions) -> Report:
    """`vsr repair`: a video, or the videos of a folder, through the ingest filters and tape repair alone, no
    network, every other stream copied as `vsr upscale` copies them (for people who upscale elsewhere). A
    folder's images are not repaired; a folder goes on past a file that fails, and resumes."""
    start = time.perf_counter()
    src = Path(src)
    check_input(src)
    dst = Path(dst) if dst is not None else default_output(src, "repaired")
    if src.is_dir():
        pairs = [(s, d) for s, d in _folder_pairs(src, dst) if not is_image(s)]
        if not pairs:
            raise VsrError(f"{src} holds no videos ({' '.join(VIDEO_SUFFIXES)}); vsr repair mends videos")
    else:
        if src.suffix.lower() not in VIDEO_SUFFIXES:
            raise VsrError(f"{src}: vsr repair takes a video ({' '.join(VIDEO_SUFFIXES)}) or a folder of them")
        pairs = [(src, dst / src.name if dst.is_dir() else dst)]
    _check_writable(dst if src.is_dir() else pairs[0][1].parent)
    check_encoder_options(opts.video)
    report = Report()
    pairs, plans = distinct_outputs(pairs, opts.video, report, one_file=not src.is_dir())
    video = replace(opts.video, quiet=opts.quiet or opts.video.quiet)
    for s, d in pairs:
        t0 = time.perf_counter()
        try:
            plan = plans.get(s) or plan_output(s, d, video)  # not a readable video: probing again says why
            if plan.finished() is not None and not opts.overwrite:
                report.skipped.append(str(plan.finished()))
                report.rows.append((str(s), "skipped", 0, 0.0, str(plan.finished())))
                continue
            result = transcode(s, d, lambda frames, indices, resets: frames, 1.0, video, plan=plan,
                               identity={"repair only": True} if video.resume else None)
        except (VsrError, OSError) as e:
            if not src.is_dir():
                raise
            report.failed[str(s)] = " ".join(str(e).split())
            report.rows.append((str(s), "failed", 0, time.perf_counter() - t0, report.failed[str(s)]))
            continue
        report.outputs.append(str(result.output))
        report.frames += result.frames
        report.decode_errors += result.decode_errors
        report.notes += [f"{s.name}: {n}" for n in result.notes]
        if result.repairs:
            report.repairs = {**(report.repairs or {}), str(s): result.repairs}
        report.rows.append((str(s), "done", result.frames, time.perf_counter() - t0, str(result.output)))
    report.wall_seconds = time.perf_counter() - start
    return _one_file_repairs(report, src)


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
        if is_image(s):
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
    repair = RepairOptions(mode="off" if mode is False else str(mode), chroma_delay=given.get("chroma_delay"),
                           drop_repeats=bool(given.get("drop_repeats")))
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
