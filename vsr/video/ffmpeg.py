"""Locating and running the ffmpeg binary (stream copy, muxing, detection filters); PyAV does the decoding
and encoding.

The binary is the system one when there is one (4.4 or later), else the one bundled with imageio-ffmpeg;
`VSR_FFMPEG=system|bundled|PATH` picks one. What a binary can do is read from it once (`has_option`), and a
step its version cannot do is done another way (see `rotation_args`).

Command lines are built with ffmpeg-python (`ffmpeg.input(...)`, `ffmpeg.output(...)`) and compiled to an
argument list, which is run with `subprocess` as a list, never through a shell.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import ffmpeg

from vsr.errors import VsrError

ENV = "VSR_FFMPEG"
OLDEST = (4, 4)  # the oldest ffmpeg the command lines here are written for
STALL_S = 300.0  # a step whose output has not grown nor its time moved for this long is stuck: it is stopped


class FfmpegError(VsrError, RuntimeError):
    """The ffmpeg binary failed at one step: one line naming the step and the file. A RuntimeError too, so a
    caller that can redo the step another way (another container) catches it as before."""


def parse_release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string ("5.1.9-0+deb12u1", "n9.0.2-17-g...", "4.4"); None for "N-12345-g..."."""
    m = re.match(r"n?(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _ask(exe: str, *args: str) -> str:
    try:
        return subprocess.run([exe, "-hide_banner", *args], capture_output=True, text=True, errors="replace",
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise VsrError(f"the ffmpeg binary {exe} cannot be run ({exc}); install ffmpeg, or set {ENV}=bundled "
                       "to use the one that comes with imageio-ffmpeg") from None


@lru_cache(maxsize=None)
def version(exe: str) -> str:
    """The version `exe -version` names: "5.1.9-0+deb12u1", "n9.0.2-17-g2a571b6068-20260930"."""
    m = re.search(r"version (\S+)", _ask(exe, "-version"))
    return m.group(1) if m else "unknown"


@lru_cache(maxsize=None)
def _options(exe: str) -> frozenset[str]:
    return frozenset(re.findall(r"^-(\w+)", _ask(exe, "-h", "full"), flags=re.M))


def has_option(exe: str, option: str) -> bool:
    """Whether the binary's command line knows `-option` (read from its full help, once per binary)."""
    return option in _options(exe)


def describe(exe: str | None = None) -> str:
    """The binary's version and path, as "ffmpeg VERSION at PATH" (the chosen binary by default)."""
    exe = exe or ffmpeg_exe()
    return f"ffmpeg {version(exe)} at {exe}"


@lru_cache(maxsize=1)
def bundled_exe() -> str | None:
    """The binary that comes with imageio-ffmpeg, or None where it has none for this platform."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):  # not installed; no binary for this platform
        return None


def ffmpeg_exe() -> str:
    """The ffmpeg binary: `VSR_FFMPEG` (system, bundled or a path) when set, else the system one when on PATH
    and 4.4 or later, else the one bundled with imageio-ffmpeg."""
    return _choose(os.environ.get(ENV, "").strip())


@lru_cache(maxsize=None)
def _choose(choice: str) -> str:
    system, bundled = shutil.which("ffmpeg"), bundled_exe()
    if choice == "system":
        if not system:
            raise VsrError(f"{ENV}=system but there is no ffmpeg on PATH; install ffmpeg or set {ENV}=bundled")
        return system
    if choice == "bundled":
        if not bundled:
            raise VsrError(f"{ENV}=bundled but imageio-ffmpeg has no ffmpeg binary here; "
                           f"`pip install imageio-ffmpeg`, or set {ENV}=system")
        return bundled
    if choice and choice != "auto":
        path = shutil.which(choice) or ""
        if not path or Path(path).is_dir():
            raise VsrError(f"{ENV}={choice}: no such program; give the path of an ffmpeg binary, "
                           "or system or bundled")
        return path
    if system:
        release = parse_release(version(system))
        if release is None or release >= OLDEST or not bundled:
            return system
    if bundled:
        return bundled
    raise VsrError("no ffmpeg binary found: install ffmpeg or `pip install imageio-ffmpeg`")


def rotation_args(degrees: int, container: str, *, exe: str | None = None
                  ) -> tuple[str, dict[str, str], list[str]] | None:
    """How to put a display matrix turning the picture `degrees` counter-clockwise on the video copied from
    the first input into `container` with `exe` (the chosen binary by default): (binary, options of that
    input, output options), or None where no binary at hand can.

    ffmpeg 6.0 and later take `-display_rotation` on the input. Older ones write the MP4/MOV matrix from the
    stream's `rotate` tag (the same matrix for the same number of degrees), but nothing into Matroska; that
    step then runs with the bundled binary.
    """
    exe = exe or ffmpeg_exe()
    if has_option(exe, "display_rotation"):
        return exe, {"display_rotation": str(degrees)}, []
    if container in ("mp4", "mov"):
        return exe, {}, ["-metadata:s:0", f"rotate={degrees}"]
    bundled = bundled_exe()
    if bundled and bundled != exe and has_option(bundled, "display_rotation"):
        return bundled, {"display_rotation": str(degrees)}, []
    return None


def compile_cmd(output: ffmpeg.nodes.OutputStream, *, global_args: Sequence[str] = (),
                extra_inputs: Sequence[str] = (), output_args: Sequence[str] = (), loglevel: str = "error",
                overwrite: bool = True, exe: str | None = None) -> list[str]:
    """The argument list (binary first) for one ffmpeg-python output graph.

    Two things ffmpeg-python cannot express are added as plain items:
    - `extra_inputs`: files read for something other than streams (`-map_metadata`, `-map_chapters`).
      ffmpeg-python only writes an input that some mapped stream comes from; these follow its inputs, as
      `-i PATH`, numbered after them.
    - `output_args`: output options given several times (`-metadata:s:0 a=1 -metadata:s:0 b=2`):
      ffmpeg-python writes each keyword once. They go with the other output options, before the path.
    `exe`: the binary, when a step needs another than `ffmpeg_exe()`.
    """
    glob = ["-nostdin", "-hide_banner", *global_args, "-loglevel", loglevel]
    cmd = output.global_args(*glob).compile(cmd=exe or ffmpeg_exe(), overwrite_output=overwrite)
    # ffmpeg-python writes: binary, each input's options and -i PATH, output options, output path, then
    # the global options (ffmpeg reads those anywhere on the line) and -y.
    tail = glob + ["-y"] * overwrite
    path_at = len(cmd) - len(tail) - 1
    assert cmd[path_at + 1:] == tail, cmd
    cmd = cmd[:path_at] + list(output_args) + cmd[path_at:]
    if extra_inputs:
        inputs_end = max(k for k, arg in enumerate(cmd[:path_at]) if arg == "-i") + 2
        cmd[inputs_end:inputs_end] = [arg for path in extra_inputs for arg in ("-i", path)]
    return cmd


def log_tail(stderr: str, lines: int = 4) -> str:
    """The last lines of an ffmpeg log on one line."""
    return " | ".join(line.strip() for line in stderr.strip().splitlines()[-lines:] if line.strip())


def execute(cmd: Sequence[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a full ffmpeg argument list (binary first) as a list, never a shell; its log is captured."""
    return subprocess.run(list(cmd), capture_output=True, text=True, errors="replace", timeout=timeout)


def run_cmd(cmd: Sequence[str], *, what: str, path: Path | str | None = None) -> None:
    """Run a compiled argument list; a failure is one line (FfmpegError) naming the step, the file and the
    binary, with the last lines of ffmpeg's log. An ffmpeg that stops making progress (no byte written, no
    time reached for STALL_S) is stopped and run once more (a stall is a race that seldom comes twice), then
    reported the same way rather than waited for forever."""
    code, log = _watched(cmd, STALL_S)
    if code is None:
        code, log = _watched(cmd, STALL_S)
    if code == 0:
        return
    exe = cmd[0]
    try:
        binary = describe(exe)
    except VsrError:
        binary = f"ffmpeg at {exe}"
    other = f"{ENV}=bundled" if exe != bundled_exe() else f"{ENV}=system or a path"
    where = f"{path}: " if path is not None else ""
    if code is None:
        raise FfmpegError(f"{where}ffmpeg made no progress for {STALL_S:g} s while {what}, twice, and was stopped; "
                          f"{binary}, {other} tries another")
    tail = log_tail(log) or f"exit code {code}"
    raise FfmpegError(f"{where}ffmpeg failed while {what} ({tail}); {binary}, {other} tries another")


def _watched(cmd: Sequence[str], stall_s: float) -> tuple[int | None, str]:
    """Run ffmpeg with its progress report (``-progress``) on a pipe: (exit code, or None when it was
    stopped because the size written and the time reached stayed the same for ``stall_s``; its log)."""
    proc = subprocess.Popen([cmd[0], "-progress", "pipe:1", "-nostats", *cmd[1:]], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    log: list[str] = []
    moved = [time.monotonic()]  # when the report last changed

    def follow() -> None:
        now: dict[str, str] = {}
        last: dict[str, str] = {}
        for line in proc.stdout:  # blocks of key=value lines, each ended by progress=continue|end
            key, _, value = line.strip().partition("=")
            if key in ("total_size", "out_time_us"):
                now[key] = value
            elif key == "progress" and now != last:
                last, moved[0] = dict(now), time.monotonic()

    readers = [threading.Thread(target=follow, daemon=True),
               threading.Thread(target=lambda: log.append(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    try:
        while True:
            try:
                code: int | None = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - moved[0] > stall_s:
                    proc.kill()
                    proc.wait()
                    code = None
                    break
    except BaseException:  # Ctrl-C: no ffmpeg is left behind writing
        proc.kill()
        proc.wait()
        raise
    for t in readers:
        t.join(timeout=10)
    return code, "".join(log)


def run_ffmpeg(args: Sequence[str], *, what: str, path: Path | str | None = None) -> None:
    """Run ffmpeg with plain arguments (lavfi test sources and other graphs with no input file)."""
    run_cmd([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], what=what, path=path)
