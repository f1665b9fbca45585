"""What the page shows of one file: a moment of it restored before committing hours to it, and a finished
video against its input.

The preview: a few frames from the chosen time are cut out losslessly and restored by the job module with
the job's own options (ingest, tape repair, model), and the first frame before and after is written as PNG
for the page's slider. The pace of those frames after the first (the warm-up) projects the whole file's
time, as `vsr upscale` projects it from its first minutes, with the faster option it would name.

The repairs measure what they find on those few frames rather than on the whole file, so a preview of a
tape whose chroma delay varies may differ slightly from the job's frame at that time.
"""
from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import av

from .. import compare, images
from ..errors import VsrError
from ..job import Job
from ..projection import projected
from ..video import probe
from ..video.ffmpeg import run_ffmpeg
from .jobqueue import upscale_options

FRAMES = 5  # what deinterlacing and tape repair look at around the frame shown
COMPARE_FRAMES = 60  # the first frames of a finished video that its compare view measures
KEEP = 8  # previews kept on disk (the page shows the newest)


def first_frame(video: Path, png: Path) -> tuple[int, int]:
    try:
        with av.open(str(video)) as f:
            for frame in f.decode(video=0):
                rgb = frame.to_ndarray(format="rgb24")
                images.write_image(png, rgb)
                return rgb.shape[1], rgb.shape[0]
    except av.error.FFmpegError:  # nothing was cut out: the time is past the end
        pass
    raise VsrError(f"{video.name}: no frame at that time; choose a time within the clip")


def make_preview(src: Path, at: float, settings: dict[str, Any], previews: Path) -> dict[str, Any]:
    """The frame at ``at`` seconds of ``src``, before and after, in a new folder under ``previews``."""
    # encoding settings do not change the picture shown: the restored frames go to a lossless file
    picture = {k: v for k, v in settings.items() if k not in ("codec", "crf", "encoder_preset", "segment_frames")}
    opts = upscale_options({**picture, "max_frames": FRAMES, "codec": "ffv1"})
    opts = replace(opts, overwrite=True, video=replace(opts.video, resume=False))
    key = uuid.uuid4().hex[:12]
    folder = previews / key
    folder.mkdir(parents=True)
    try:
        clip = folder / "clip.mkv"
        run_ffmpeg(["-ss", f"{at:.3f}", "-i", str(src), "-map", "0:v:0", "-frames:v", str(FRAMES),
                    "-c:v", "ffv1", str(clip)], what="cutting the preview's frames", path=src)
        before = first_frame(clip, folder / "before.png")
        times: list[tuple[float, int]] = []
        job = Job(opts)
        report = job.restore(clip, folder / "after.mkv",
                             progress=lambda done, _: times.append((time.perf_counter(), done)))
        if report.failed:
            raise VsrError(next(iter(report.failed.values())))
        after = first_frame(Path(report.outputs[0]), folder / "after.png")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for old in sorted(previews.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return {"id": key, "at": at, "before": list(before), "after": list(after), "notes": report.notes,
            "projection": projection(src, job, times, settings.get("max_frames"))}


def projection(src: Path, job: Job, times: list[tuple[float, int]], max_frames: int | None) -> str:
    """The whole file at the pace of the preview's frames after its first batch; "" when that is unknown.
    ``times``: (clock, frames done) at the start and after each batch."""
    if len(times) < 3 or times[-1][1] <= times[1][1]:
        return ""
    (t1, d1), (t2, d2) = times[1], times[-1]
    per_frame = (t2 - t1) / (d2 - d1)
    total = probe(src).frames
    total = min(total, max_frames) if total and max_frames else total
    if not total:
        return ""
    return projected(src.name, total * per_frame, total, per_frame, job.engine.device, job.faster)


def compare_view(src: Path, output: Path, folder: Path) -> dict[str, Any]:
    """`vsr compare` of the input (enlarged plainly) against the output over their first COMPARE_FRAMES
    frames: the side-by-side picture and the per-frame plot written into ``folder``, and the table."""
    if src.suffix.lower() in images.IMAGE_SUFFIXES:
        raise VsrError(f"{src.name} is an image: open its output to see it; the compare view is for videos")
    c = compare.compare(src, output, max_frames=COMPARE_FRAMES)
    folder.mkdir(parents=True, exist_ok=True)
    images.write_image(folder / compare.PICTURE, compare.side_by_side(c))
    images.write_image(folder / compare.PLOT, compare.plot(c))
    return {"frames": c.frames, "table": compare.table(c), "picture_frame": c.shown_index}
