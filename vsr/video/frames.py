"""A video's frames as RGB pictures, converted as `vsr upscale` decodes them (the stream's own colour matrix
and range, the stream's size): for the trainer's video sources and `vsr compare`."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from vsr.video.colour import to_rgb
from vsr.video.probe import VideoInfo, probe


def rgb_frames(path: str | Path, info: VideoInfo | None = None, *, skip_damaged: bool = False
               ) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames in decoding order. ``info``: the file's probe, when the caller has it.
    ``skip_damaged``: packets that fail to decode are left out (a gap is taken as consecutive) instead of
    raising av's error."""
    info = info or probe(path)
    with av.open(str(path), metadata_errors="replace") as container:
        stream = container.streams[info.video_index]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                if not skip_damaged:
                    raise
                continue
            for frame in decoded:
                yield to_rgb(frame, info.colour, width=info.width, height=info.height).to_ndarray()


def frame_at(path: str | Path, info: VideoInfo, fraction: float) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB: the first frame decoded after seeking to ``fraction`` of the video's duration (the
    keyframe before it, so close to there); the first frame when the duration is unknown; None when nothing
    decodes."""
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            stream = container.streams[info.video_index]
            if info.duration:
                container.seek(int(info.duration * fraction * 1_000_000))  # AV_TIME_BASE, backward
            for frame in container.decode(stream):
                return to_rgb(frame, info.colour, width=info.width, height=info.height).to_ndarray()
    except (av.error.FFmpegError, OSError):
        pass
    return None
