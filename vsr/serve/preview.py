"""One moment of a file restored before committing hours to it: a few frames from the chosen time are cut
out losslessly and restored by the job module with the job's own options (ingest, tape repair, model), and
the first frame before and after is written as PNG for the page's slider.

The repairs measure what they find on those few frames rather than on the whole file, so a preview of a
tape whose chroma delay varies may differ slightly from the job's frame at that time.
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import av

from .. import images
from ..errors import VsrError
from ..job import restore_file
from ..video.ffmpeg import run_ffmpeg
from .jobqueue import upscale_options

FRAMES = 5  # what deinterlacing and tape repair look at around the frame shown
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
        report = restore_file(clip, folder / "after.mkv", opts)
        if report.failed:
            raise VsrError(next(iter(report.failed.values())))
        after = first_frame(Path(report.outputs[0]), folder / "after.png")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for old in sorted(previews.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return {"id": key, "at": at, "before": list(before), "after": list(after), "notes": report.notes}
