"""Crash-safe progress for long videos: a work folder beside the output holds finished segment files and
a manifest that says which are complete. Every write of the manifest is atomic (temporary file, fsync,
rename, fsync of the folder), so after kill -9 or power loss it names only segments that are whole on disk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vsr.errors import VsrError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one run per output is up to the user
    fcntl = None

MANIFEST = "manifest.json"
VERSION = 1
HEAD_BYTES = 1 << 20  # hashing the first MB tells a re-encoded or replaced input apart cheaply


def work_dir_for(output: Path) -> Path:
    """The hidden work folder of one output, named from it so the same command finds it again."""
    return output.parent / f".{output.name}.vsr-work"


def lock_path_for(output: Path) -> Path:
    return output.parent / f".{output.name}.vsr-lock"


@contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """One run at a time writes `output`: a second run on the same output refuses at once instead of
    mixing its segments and manifest with the first's. The lock (flock on a hidden file beside the output)
    goes with the process, so a killed run leaves nothing that blocks the next one."""
    if fcntl is None:
        yield
        return
    lock = lock_path_for(output)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise VsrError(f"another vsr run{who} is writing {output}; wait for it to finish, or choose "
                           "another -o") from None
        try:  # the run that held it may have removed the file meanwhile: only the one on disk counts
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        lock.unlink(missing_ok=True)  # removed while still held, so no other run holds a stale copy
        os.close(fd)


def input_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(HEAD_BYTES)).hexdigest()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": head}


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC (or a quota) from Python, PyAV or the ffmpeg binary's message."""
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_file(partial: Path, final: Path) -> None:
    """A finished file becomes visible under its final name only once its bytes are on disk."""
    fsync_file(partial)
    os.replace(partial, final)
    fsync_dir(final.parent)


def clear_leftovers(done: Path, output: Path) -> None:
    """Remove the work folder of the finished output ``done`` (written for ``output``): a run stopped
    between renaming its output into place and removing that folder. A run writing the output anew
    (--overwrite) holds its lock and owns the folder: it is then left alone."""
    try:
        with output_lock(output):
            shutil.rmtree(work_dir_for(done), ignore_errors=True)
    except VsrError:
        pass


def recorded_identity(work: Path) -> dict[str, Any] | None:
    """The identity the unfinished work in `work` was made under, or None."""
    try:
        return json.loads((work / MANIFEST).read_text()).get("identity")
    except (OSError, ValueError, AttributeError):
        return None


def _is_part(p: Path) -> bool:
    """A part's folder or lock: a segment computed elsewhere, kept until the segments before it are done
    (one of another identity is never adopted, and goes with the work folder)."""
    return p.name.startswith(("part_", ".part_"))


@dataclass(frozen=True)
class SegmentRecord:
    file: str  # name inside the work folder
    frames: int
    size: int  # bytes; a file of another size is not the one that was finished
    first_pts: int
    last_pts: int  # output time base; where a resumed decode picks up


class Manifest:
    """The state of one output's work folder. `identity` is everything that decides the output bytes:
    the input file, every option, the model; a different identity means the old work is useless."""

    def __init__(self, *, work: Path, identity: dict[str, Any]) -> None:
        self.work = work
        self.identity = json.loads(json.dumps(identity))  # normalised as it will read back
        self.segments: list[SegmentRecord] = []
        self.layout: dict[str, Any] | None = None  # encoded size, SAR, time scale: what muxing needs
        self.end: dict[str, Any] | None = None  # set when every frame is encoded
        self.note: str | None = None
        self.adopted = 0  # frames of finished parts taken over by open()

    @classmethod
    def open(cls, *, work: Path, identity: dict[str, Any]) -> Manifest:
        """Load the work folder's manifest when it matches `identity`; otherwise start the folder afresh.
        Files the manifest does not vouch for (a segment killed mid-write) are deleted."""
        m = cls(work=work, identity=identity)
        path = work / MANIFEST
        old = None
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = None
        if old is not None and old.get("version") == VERSION and old.get("identity") == m.identity:
            m.layout, m.end = old.get("layout"), old.get("end")
            for rec in (SegmentRecord(**r) for r in old.get("segments", [])):
                f = work / rec.file
                if not f.is_file() or f.stat().st_size != rec.size:
                    m.end = None  # this one and everything after it are redone
                    break
                m.segments.append(rec)
            if m.segments or m.layout:
                m.note = (f"resuming: {m.frames} frames in {len(m.segments)} segments were already done "
                          f"({work.name})")
        elif old is not None or (work.exists() and any(not _is_part(p) for p in work.iterdir())):
            changed = [k for k in m.identity if (old or {}).get("identity", {}).get(k) != m.identity[k]]
            what = ", ".join(changed) if old else "unreadable manifest"
            m.note = f"earlier unfinished work in {work.name} does not match ({what} changed): starting over"
        work.mkdir(parents=True, exist_ok=True)
        m._adopt_parts()
        keep = {MANIFEST} | {r.file for r in m.segments}
        for p in work.iterdir():
            if p.name not in keep and not _is_part(p):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink()
        m.save()
        return m

    def _adopt_parts(self) -> None:
        """Take over the finished parts (see vsr.video.transcode.Part) that continue these segments."""
        while True:
            folder = self.work / f"part_{len(self.segments):05d}"
            try:
                part = json.loads((folder / MANIFEST).read_text())
            except (OSError, ValueError):
                break
            recs = [SegmentRecord(**r) for r in part.get("segments", [])]
            if (part.get("identity") != self.identity or part.get("end") is None or len(recs) != 1
                    or not (folder / recs[0].file).is_file()):
                break
            os.replace(folder / recs[0].file, self.work / recs[0].file)
            self.layout = self.layout or part.get("layout")
            self.add(recs[0])
            shutil.rmtree(folder, ignore_errors=True)
            self.adopted += recs[0].frames
        if self.adopted:
            self.note = (f"{self.adopted} frames came from parts computed separately; {self.frames} frames in "
                         f"{len(self.segments)} segments are done ({self.work.name})")

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.segments)

    def add(self, rec: SegmentRecord) -> None:
        self.segments.append(rec)
        self.save()

    def save(self) -> None:
        data = {"version": VERSION, "identity": self.identity, "layout": self.layout, "end": self.end,
                "segments": [asdict(r) for r in self.segments]}
        tmp = self.work / (MANIFEST + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.work / MANIFEST)
        fsync_dir(self.work)
