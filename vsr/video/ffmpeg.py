"""Locating and running the ffmpeg binary (stream copy, muxing, detection filters); PyAV does the decoding
and encoding.

Command lines are built with ffmpeg-python (`ffmpeg.input(...)`, `ffmpeg.output(...)`) and compiled to an
argument list, which is run with `subprocess` as a list, never through a shell.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache

import ffmpeg

from vsr.errors import VsrError


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: the system one when on PATH, else the one bundled with imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - depends on the install
        raise VsrError("no ffmpeg binary found: install ffmpeg or `pip install imageio-ffmpeg`") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def compile_cmd(output: ffmpeg.nodes.OutputStream, *, global_args: Sequence[str] = (),
                extra_inputs: Sequence[str] = (), output_args: Sequence[str] = (), loglevel: str = "error",
                overwrite: bool = True) -> list[str]:
    """The argument list (binary first) for one ffmpeg-python output graph.

    Two things ffmpeg-python cannot express are added as plain items:
    - `extra_inputs`: files read for something other than streams (`-map_metadata`, `-map_chapters`).
      ffmpeg-python only writes an input that some mapped stream comes from; these follow its inputs, as
      `-i PATH`, numbered after them.
    - `output_args`: output options given several times (`-metadata:s:0 a=1 -metadata:s:0 b=2`):
      ffmpeg-python writes each keyword once. They go with the other output options, before the path.
    """
    glob = ["-nostdin", "-hide_banner", *global_args, "-loglevel", loglevel]
    cmd = output.global_args(*glob).compile(cmd=ffmpeg_exe(), overwrite_output=overwrite)
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


def run_cmd(cmd: Sequence[str], *, what: str) -> None:
    """Run a compiled argument list; raise RuntimeError with the last lines of the log on failure."""
    proc = execute(cmd)
    if proc.returncode != 0:
        tail = log_tail(proc.stderr)
        raise RuntimeError(f"ffmpeg failed while {what}: {tail or 'exit code %d' % proc.returncode}")


def run_ffmpeg(args: Sequence[str], *, what: str) -> None:
    """Run ffmpeg with plain arguments (lavfi test sources and other graphs with no input file)."""
    run_cmd([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], what=what)
