"""The page's queue: files restored with the job module (a ``Job`` per file, as its ``restore_file`` does), each
with the options of a ``vsr upscale`` command, one at a time per device (a worker thread for each device the
jobs name), kept in a JSON file so that a restarted server shows the jobs and continues those it was running.

Stopping a video midway is the CLI's Ctrl-C: an exception out of the progress callback ends the transcode,
its finished segments stay in the work folder with their manifest, and the next run of the same file
continues after them (vsr.video.resume). Pause waits for the next segment to finish so that no frame is
thrown away; cancel stops at once and removes the work folder.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..engine.device import select_device
from ..errors import VsrError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
from ..job import Job, UpscaleOptions
from ..projection import Projection, format_duration
from ..upscale import default_output, options_with_preset
from ..video import check_encoder_options, plan_output
from ..video.resume import lock_path_for, work_dir_for
from ..video.transcode import DEFAULT_SEGMENT_FRAMES

STATES = ("queued", "running", "paused", "done", "failed", "cancelled")
# the `vsr upscale` options the page offers, each with its flag
FLAGS = {"preset": "--preset", "model": "--model", "scale": "--scale", "temperature": "--tau",
         "device": "--device", "backend": "--backend", "codec": "--codec", "crf": "--crf",
         "encoder_preset": "--encoder-preset", "repair": "--repair",
         "segment_frames": "--segment-frames", "max_frames": "--max-frames"}
# every option of an upscale job as the command line gives it when not named (see cli._job_options)
_CLI_DEFAULTS: dict[str, Any] = {
    k: None for k in ("model", "scale", "temperature", "seed", "ensemble", "cluster", "devices", "batch",
                      "segment_frames", "codec", "crf", "encoder_preset", "pix_fmt", "max_frames", "deinterlace",
                      "double_rate", "crop", "colour", "repair", "chroma_delay", "backend")}
_CLI_DEFAULTS.update(device="auto", precision="auto", tile="auto", overwrite=False, keep_sar=False)


def upscale_options(settings: dict[str, Any]) -> UpscaleOptions:
    """The options ``vsr upscale`` would run with, given the page's settings (a subset of FLAGS)."""
    unknown = set(settings) - set(FLAGS)
    if unknown:
        raise VsrError(f"unknown setting {sorted(unknown)[0]!r}; expected one of: {', '.join(FLAGS)}")
    given = {**_CLI_DEFAULTS, **{k: v for k, v in settings.items() if k != "preset" and v is not None}}
    return options_with_preset(settings.get("preset"), encoder_options={}, quiet=True, resume=True, **given)


def device_key(settings: dict[str, Any]) -> str:
    """The device a job runs on, as the queue groups jobs (auto is the one `vsr upscale` would take)."""
    name = settings.get("device") or "auto"
    try:
        dev = select_device(name)
    except VsrError:  # fails with its one line when it runs, on a worker of its own: no other job waits
        return name
    return f"cuda:{dev.index or 0}" if dev.type == "cuda" else dev.type


def command_line(src: Path, dst: Path, settings: dict[str, Any]) -> list[str]:
    """The same job as a command: what the page runs is what this would run."""
    args = ["vsr", "upscale", str(src), "-o", str(dst)]
    for key, flag in FLAGS.items():
        if settings.get(key) is not None:
            value = settings[key]
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args


@dataclass
class Entry:
    """One file of the queue as the page shows it (and the JSON file keeps it)."""

    id: str
    src: str
    dst: str
    settings: dict[str, Any]
    command: list[str]
    device: str = ""  # the worker that runs it (device_key)
    state: str = "queued"
    done: int = 0  # frames finished
    total: int | None = None
    eta_s: float | None = None
    eta: str = ""
    note: str = ""
    projection: str = ""  # the line `vsr upscale` prints for a long video: its time here, a faster option
    error: str | None = None
    output: str | None = None
    report: dict[str, Any] | None = None  # the `vsr upscale --json` object
    added: float = field(default_factory=time.time)


class Interrupted(BaseException):
    """Raised from the progress callback to stop a transcode (not an Exception: the job module reports
    Exceptions as a failed file, and this is no failure)."""


class JobQueue:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.file = self.state_dir / "queue.json"
        self._hold = self._lock_state()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)  # a job was queued, or the server stops
        self.stopping = threading.Event()
        self.requests: dict[str, str] = {}  # job id -> "pause" or "cancel", for the running job
        self.version = 0  # counts changes: the event stream sends a snapshot when it moves
        try:
            self.jobs: list[Entry] = self._load()
        except VsrError:
            self._release()
            raise
        self.workers: dict[str, threading.Thread] = {}  # device -> the thread running its jobs
        self.started = False

    # --- the page's actions -------------------------------------------------------------------------
    def add(self, src: Path, dst: Path | None, settings: dict[str, Any]) -> Entry:
        opts = upscale_options(settings)  # a bad preset, codec or CRF is refused now, not when the job runs
        check_encoder_options(opts.video)
        label = f"x{opts.scale:g}" if opts.scale else "vsr"
        dst = dst or default_output(src, label)
        if dst.resolve() == src.resolve():
            raise VsrError(f"the output {dst} is the input; choose another output")
        entry = Entry(id=uuid.uuid4().hex[:12], src=str(src), dst=str(dst), settings=dict(settings),
                      command=command_line(src, dst, settings), device=device_key(settings))
        with self.lock:
            self.jobs.append(entry)
            self._changed()
            self._queued(entry)
        return entry

    def pause(self, job_id: str) -> Entry:
        with self.lock:
            entry = self._get(job_id)
            if entry.state == "running":
                self.requests[job_id] = "pause"
                entry.note = "pausing at the end of the current segment"
            elif entry.state == "queued":
                entry.state, entry.note = "paused", "paused before it started"
            else:
                raise VsrError(f"a {entry.state} job cannot be paused")
            self._changed()
            return entry

    def resume(self, job_id: str) -> Entry:
        with self.lock:
            entry = self._get(job_id)
            if entry.state not in ("paused", "failed"):
                raise VsrError(f"a {entry.state} job cannot be resumed; only paused or failed ones")
            entry.state, entry.error = "queued", None
            entry.note = "continues from its last finished segment" if entry.done else ""
            self._changed()
            self._queued(entry)
        return entry

    def cancel(self, job_id: str) -> Entry:
        with self.lock:
            entry = self._get(job_id)
            if entry.state == "running":
                self.requests[job_id] = "cancel"
                entry.note = "cancelling"
                self._changed()
                return entry
            if entry.state not in ("queued", "paused", "failed"):
                raise VsrError(f"a {entry.state} job cannot be cancelled")
        self._drop_work(entry)
        with self.lock:
            entry.state, entry.note, entry.done, entry.eta = "cancelled", "cancelled; its work folder removed", 0, ""
            self._changed()
        return entry

    def move(self, job_id: str, step: int) -> Entry:
        """Earlier (step -1) or later (+1) in the queue: the worker takes the first queued job."""
        with self.lock:
            entry = self._get(job_id)
            i = self.jobs.index(entry)
            j = min(max(i + step, 0), len(self.jobs) - 1)
            self.jobs.insert(j, self.jobs.pop(i))
            self._changed()
            return entry

    def remove(self, job_id: str) -> None:
        """Take a finished, failed or cancelled job off the list (its output stays)."""
        with self.lock:
            entry = self._get(job_id)
            if entry.state not in ("done", "failed", "cancelled"):
                raise VsrError(f"a {entry.state} job stays on the list; cancel it first")
            self.jobs.remove(entry)
            self._changed()
        shutil.rmtree(self.state_dir / "compare" / job_id, ignore_errors=True)

    def snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        with self.lock:
            return self.version, [asdict(e) for e in self.jobs]

    def get(self, job_id: str) -> Entry:
        with self.lock:
            return self._get(job_id)

    # --- the worker ---------------------------------------------------------------------------------
    def start(self) -> None:
        with self.lock:
            self.stopping.clear()
            self.started = True
            for entry in self.jobs:
                if entry.state == "queued":
                    self._queued(entry)

    def stop(self, timeout: float = 60.0) -> None:
        """Each running job stops at its next encoded batch (its finished segments kept) and is queued again."""
        with self.lock:
            self.stopping.set()
            self.started = False
            self.wake.notify_all()
            workers, self.workers = list(self.workers.values()), {}
        end = time.monotonic() + timeout
        for thread in workers:
            thread.join(max(0.0, end - time.monotonic()))
        self._release()

    def _queued(self, entry: Entry) -> None:
        """Called with the lock held: wakes the worker of the job's device, started if it has none."""
        if not self.started:
            return
        if not entry.device:  # a queue written before jobs had devices
            entry.device = device_key(entry.settings)
        worker = self.workers.get(entry.device)
        if worker is None or not worker.is_alive():
            worker = threading.Thread(target=self._work, args=(entry.device,), daemon=True,
                                      name=f"vsr-serve-{entry.device}")
            self.workers[entry.device] = worker
            worker.start()
        self.wake.notify_all()

    def _release(self) -> None:
        if self._hold is not None:  # another server may keep this queue now
            os.close(self._hold)
            self._hold = None

    def _work(self, device: str) -> None:
        """One device's jobs, the first queued one at a time."""
        while not self.stopping.is_set():
            with self.lock:
                entry = next((e for e in self.jobs if e.state == "queued" and e.device == device), None)
                if entry is None:
                    self.wake.wait(1.0)
                    continue
                entry.state, entry.error = "running", None
                self._changed()
            self._run(entry)

    def _run(self, entry: Entry) -> None:
        seg = entry.settings.get("segment_frames") or DEFAULT_SEGMENT_FRAMES
        calls = [0]
        start: list[tuple[float, int]] = []

        def progress(done: int, total: int | None) -> None:
            if projection:
                projection[0].progress(done, total)
            now = time.monotonic()
            with self.lock:
                if not start:
                    start.append((now, done))
                    entry.note = f"continues after {done} finished frames" if done else "restoring"
                t0, d0 = start[0]
                before, entry.done, entry.total = entry.done, done, total
                if total and done > d0:
                    entry.eta_s = (total - done) * (now - t0) / (done - d0)
                    entry.eta = format_duration(entry.eta_s)
                self.version += 1  # shown at once, written to disk with the next change of state
                request = self.requests.get(entry.id)
            calls[0] += 1
            # never on the first call (the transcode's start, before its threads are guarded) nor on the last
            if calls[0] == 1 or (total and done >= total):
                return
            if self.stopping.is_set() or request == "cancel":
                raise Interrupted(request or "stop")
            if request == "pause" and done // seg > before // seg:  # a segment has just been finished
                raise Interrupted("pause")

        def say(line: str) -> None:
            with self.lock:
                entry.projection = line
                self._changed()

        projection: list[Projection] = []
        t0 = time.perf_counter()
        try:  # as the job module's restore_file, with the projection `vsr upscale` prints
            job = Job(upscale_options(entry.settings))
            projection.append(Projection(name=Path(entry.src).name, device=job.engine.device, hint=job.faster,
                                         write=say))
            report = job.restore(Path(entry.src), Path(entry.dst), progress=progress)
            report.add_engine_stats(job.engine.stats)
            report.wall_seconds = time.perf_counter() - t0  # this run's (a resumed job's earlier runs not counted)
        except Interrupted as why:
            self._interrupted(entry, str(why))
            return
        except Exception as e:  # a bad model or options: the job says why, the queue goes on
            self._finish(entry, "failed", error=" ".join(str(e).split()) or type(e).__name__)
            return
        summary = json.loads(json.dumps(report.as_dict(), default=str))
        if report.failed:
            self._finish(entry, "failed", error=next(iter(report.failed.values())), report=summary)
        elif report.skipped:
            self._finish(entry, "done", note="the output exists already; it was kept", output=report.skipped[0],
                         report=summary)
        else:
            notes = "; ".join(report.notes)
            self._finish(entry, "done", note=notes or f"{report.frames} frames", output=report.outputs[0],
                         report=summary)

    def _interrupted(self, entry: Entry, why: str) -> None:
        if why == "cancel":
            self._drop_work(entry)
            self._finish(entry, "cancelled", note="cancelled; its work folder removed")
        elif why == "pause":
            self._finish(entry, "paused", note=f"paused after {entry.done} frames; resume continues from there")
        else:
            self._finish(entry, "queued", note="the server stopped; continues from its last finished segment")

    def _finish(self, entry: Entry, state: str, **changes: Any) -> None:
        with self.lock:
            self.requests.pop(entry.id, None)
            entry.state, entry.eta_s, entry.eta = state, None, ""
            if state == "cancelled":
                entry.done = 0
            for k, v in changes.items():
                setattr(entry, k, v)
            self._changed()

    def _drop_work(self, entry: Entry) -> None:
        """The work folder of a stopped video (where its finished segments wait) and its lock file."""
        src, dst = Path(entry.src), Path(entry.dst)
        outputs = {dst}
        try:
            outputs.add(plan_output(src, dst, upscale_options(entry.settings).video).path)
        except Exception:  # noqa: BLE001 - the input may be gone or unreadable: the default place is enough
            pass
        for out in outputs:
            shutil.rmtree(work_dir_for(out), ignore_errors=True)
            lock_path_for(out).unlink(missing_ok=True)

    # --- keeping the queue --------------------------------------------------------------------------
    def _lock_state(self) -> int | None:
        """One server per queue: two would run the same jobs into the same outputs."""
        if fcntl is None:  # pragma: no cover - Windows: keeping one server per --state is up to the user
            return None
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise VsrError(f"another vsr serve keeps its queue in {self.state_dir}; stop it, or give this one "
                           "another --state") from None
        return fd

    def _get(self, job_id: str) -> Entry:
        for e in self.jobs:
            if e.id == job_id:
                return e
        raise KeyError(job_id)

    def _changed(self) -> None:
        """Called with the lock held: the page's snapshot moved; state changes are written to disk."""
        self.version += 1
        self._save()

    def _save(self) -> None:
        data = {"version": 1, "jobs": [asdict(e) for e in self.jobs]}
        tmp = self.file.with_suffix(".json.partial")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.file)

    def _load(self) -> list[Entry]:
        if not self.file.exists():
            return []
        try:
            data = json.loads(self.file.read_text())
            names = {f.name for f in fields(Entry)}
            jobs = [Entry(**{k: v for k, v in job.items() if k in names}) for job in data["jobs"]]
        except (ValueError, KeyError, TypeError) as e:
            raise VsrError(f"{self.file} is not a queue this version can read ({e}); move it away to start "
                           "an empty queue") from None
        for e in jobs:
            if e.state == "running":  # the server stopped mid-job (a crash or a kill)
                e.state = "queued"
                e.note = "the server stopped during this job; it continues from its last finished segment"
        return jobs
