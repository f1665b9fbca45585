"""Many machines: the files of a job as Ray tasks (the optional extra ``vsr[cluster]``).

Each file is one task that runs ``vsr upscale FILE -o OUTPUT`` on a worker, so its output lands as a local
run's would: under a temporary name then renamed, a video's segments and manifest in the work folder beside
the output. Tasks are idempotent: a finished output is skipped, and a task retried after its worker died
continues the video from the manifest the lost attempt left (which also makes a cluster job resumable
locally, and the reverse). Inputs and outputs must be at the same paths on every machine (shared storage).
"""
from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import VsrError

if TYPE_CHECKING:
    from .upscale import Report, UpscaleOptions

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
    from .upscale import _Job, add_engine_stats, restore_one

    job = _Job(opts)
    report = restore_one(job, Path(src), Path(dst), raise_errors=False)
    add_engine_stats(report, job)
    return report


def run(pairs: list[tuple[Path, Path]], opts: UpscaleOptions, report: Report,
        progress: Callable[[], None]) -> None:
    """Every (input, output) pair as a task on the cluster at ``opts.cluster``; results merged into
    ``report`` as they finish (``progress`` is called after each)."""
    from .upscale import merge

    connect(opts.cluster)
    import ray

    task = ray.remote(max_retries=RETRIES)(_restore)
    one = replace(opts, cluster=None, quiet=True)
    cwd = os.getcwd()
    pending = {task.remote(os.path.join(cwd, s), os.path.join(cwd, d), one): s for s, d in pairs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            src = pending.pop(done[0])
            try:
                part = ray.get(done[0])
            except ray.exceptions.RayError as e:  # retried RETRIES times and still lost
                reason = f"lost on the cluster ({' '.join(str(e).split())[:120]}); run the same command again"
                report.failed[str(src)] = reason
                report.rows.append((str(src), "failed", 0, 0.0, reason))
            else:
                merge(report, part, str(src))
            progress()
    finally:
        ray.shutdown()

