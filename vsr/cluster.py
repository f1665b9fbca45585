"""Many machines: the files of a job as Ray tasks (the optional extra ``vsr[cluster]``).

A file is one task that runs ``vsr upscale FILE -o OUTPUT`` on a worker, so its output lands as a local
run's would: under a temporary name then renamed, a video's segments and manifest in the work folder beside
the output. A video of more than one resume segment is spread first: one task finds where its segments
start (a decode of the whole file), one task per segment computes it into the work folder (see
vsr.video.Part), then the file's task joins them, adopting every finished segment. Tasks are
idempotent: a finished output or segment is skipped, and a task retried after its worker died continues
from what the lost attempt finished (which also makes a cluster job resumable locally, and the reverse).
Inputs and outputs must be at the same paths on every machine (shared storage), and every machine must
run the job alike (the same kind of device): a segment made under other settings is computed again.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from . import images, zoo
from .errors import VsrError
from .job import Job, Report, UpscaleOptions, restore_file
from .video import Part, plan_output, segment_starts

RETRIES = 3  # a task whose worker died (or was killed) runs again, continuing from its manifest


def connect(address: str) -> None:
    """``auto`` (the running cluster, or $RAY_ADDRESS), ``HOST:PORT`` or ``ray://HOST:PORT``."""
    if importlib.util.find_spec("ray") is None:
        raise VsrError("--cluster needs Ray: pip install 'vsr[cluster]'")
    import ray

    if address != "auto":  # Ray itself waits minutes for an address where nothing listens
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError):
            raise VsrError(f"cannot reach the Ray cluster at {address}: nothing answers there; start it with "
                           "`ray start --head`, or give its HOST:PORT") from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR", include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise VsrError(f"cannot reach the Ray cluster at {address} ({' '.join(str(e).split())[:120]}); "
                       "start it with `ray start --head`, or give its address") from None


def _restore(src: str, dst: str, opts: UpscaleOptions) -> Report:
    """One file on a worker, as a local run restores it (a file that fails is a failed row, not a retry)."""
    return restore_file(src, dst, opts)


def _starts(src: str, dst: str, opts: UpscaleOptions) -> list | None:
    """Where the segments of a video after the first start; None when the file is not a video to spread
    (an image, a finished output, resume off) or cannot be read (its file task then says why)."""
    if Path(src).suffix.lower() in images.IMAGE_SUFFIXES or not opts.video.resume:
        return None
    try:
        if plan_output(src, dst, opts.video).finished() is not None and not opts.overwrite:
            return None
        scale = opts.scale or zoo.resolve(opts.model, opts.scale)[0].scale
        return segment_starts(src, scale, opts.video, segment_frames=opts.segment_frames)
    except Exception:  # noqa: BLE001 - the file's own task reports it in one line
        return None


def _part(src: str, dst: str, opts: UpscaleOptions, part: Part) -> Report:
    """One segment of a video on a worker, left in the work folder for the file's task to adopt."""
    report = Report()
    try:
        job = Job(opts)
        plan = plan_output(src, dst, job.video_options)
        if plan.finished() is None or opts.overwrite:
            job.video(Path(src), plan, report, part=part)
        report.add_engine_stats(job.engine.stats)
    except Exception as e:  # noqa: BLE001 - one line for the user, as a failed file
        report.failed[src] = " ".join(str(e).split())
    report.frames, report.notes = 0, []  # the file's task counts every frame once
    return report


def run(pairs: list[tuple[Path, Path]], opts: UpscaleOptions, report: Report,
        progress: Callable[[], None]) -> None:
    """Every (input, output) pair as tasks on the cluster at ``opts.cluster``; results merged into
    ``report`` as they finish (``progress`` is called after each file)."""
    connect(opts.cluster)
    import ray

    restore, starts, part = (ray.remote(max_retries=RETRIES)(f) for f in (_restore, _starts, _part))
    one = replace(opts, cluster=None, quiet=True)
    cwd = os.getcwd()
    pending = {starts.remote(os.path.join(cwd, s), os.path.join(cwd, d), one): (s, d, "starts") for s, d in pairs}
    parts_left: dict[Path, int] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            src, dst, kind = pending.pop(done[0])
            args = (os.path.join(cwd, src), os.path.join(cwd, dst), one)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as e:  # retried RETRIES times and still lost
                if kind != "starts":
                    if kind == "file" or parts_left.pop(src, None) is not None:
                        _fail(report, src, f"lost on the cluster ({' '.join(str(e).split())[:120]}); "
                                           "run the same command again")
                        progress()
                    continue
                result = None  # the file is then one task
            if kind == "starts":
                if not result:  # one segment, an image, or nothing to do: the file is one task
                    pending[restore.remote(*args)] = (src, dst, "file")
                    continue
                parts_left[src] = len(result) + 1
                for n, start in enumerate([None, *result]):
                    pending[part.remote(*args, Part(n, start))] = (src, dst, "part")
            elif kind == "part":
                if src not in parts_left:  # the file failed already
                    continue
                if result.failed:
                    _fail(report, src, next(iter(result.failed.values())))
                    del parts_left[src]
                    progress()
                    continue
                report.merge(result, str(src))
                parts_left[src] -= 1
                if not parts_left[src]:  # every segment done: the file's task joins them
                    del parts_left[src]
                    pending[restore.remote(*args)] = (src, dst, "file")
            else:
                report.merge(result, str(src))
                progress()
    finally:
        ray.shutdown()


def _fail(report: Report, src: Path, reason: str) -> None:
    report.failed[str(src)] = reason
    report.rows.append((str(src), "failed", 0, 0.0, reason))
