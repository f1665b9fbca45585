"""probe(path): what a media file holds, or a one-line VsrError saying why it cannot be used."""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from vsr.errors import VsrError
from vsr.video.colour import Colour, read_colour

ATTACHED_PIC = int(av.stream.Disposition.attached_pic)
# the file suffixes taken for videos, everywhere (folders, training data)
# Codecs of still pictures: a track of one of them beside another video is cover art (ffmpeg writes an MP4's
# cover into Matroska as a one-frame PNG track), so the other is the video; MJPEG only when nothing else is.
_STILL_CODECS = {"png": 2, "bmp": 2, "tiff": 2, "webp": 2, "gif": 2, "mjpeg": 1}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".vob",
                  ".wmv", ".flv", ".3gp", ".ogv", ".dv")


@dataclass(frozen=True)
class StreamInfo:
    """One stream of the input, as the muxer needs to know it."""

    index: int
    type: str  # "video", "audio", "subtitle", "attachment", "data"
    codec: str  # codec name ("aac", "pcm_s16le", "ass", ...); for attachments the file name
    metadata: dict[str, str] = field(default_factory=dict)
    disposition: int = 0

    @property
    def is_cover(self) -> bool:
        return self.type == "video" and bool(self.disposition & ATTACHED_PIC)


@dataclass(frozen=True)
class VideoInfo:
    """The input file and its main video stream (the first video stream that is not cover art)."""

    path: Path
    format_name: str  # demuxer name, e.g. "matroska,webm", "avi"
    duration: float | None  # seconds, container duration
    start_time: float  # seconds, the earliest timestamp of any stream (0 for most files; MPEG-TS often not)
    streams: tuple[StreamInfo, ...]
    video_index: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int  # bits per component of the decoded pixel format
    time_base: Fraction
    frame_rate: Fraction | None  # average rate; None when the container cannot tell
    frames: int | None  # frame count the container declares (AVI/MP4), else an estimate, else None
    declared_frames: int  # what the container index lists (0 when it lists nothing)
    sar: Fraction  # sample (pixel) aspect ratio; 1 for square pixels
    colour: Colour  # resolved input colour (matrix and range never unspecified)
    rotation: int = 0  # degrees counter-clockwise the display matrix turns the stored picture (phone clips)

    @property
    def high_bit_depth(self) -> bool:
        return self.bit_depth > 8

    @property
    def start_shift(self) -> int:
        """Ticks of the video time base added to every timestamp of a file that starts before zero (an
        edited camera file), so the output starts at zero with every stream moved by the same amount."""
        return math.ceil(-self.start_time / self.time_base) if self.start_time < 0 else 0

    @property
    def display_width(self) -> int:
        return int(round(self.width * self.sar))


def _sar(stream: av.video.stream.VideoStream) -> Fraction:
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar is not None and sar > 0:
            return Fraction(sar)
    return Fraction(1)


def _bit_depth(pix_fmt: str) -> int:
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return 8


def probe(path: Path | str) -> VideoInfo:
    """Describe a video file without decoding it all; raise VsrError for anything that is not usable video."""
    path = Path(path)
    if not path.exists():
        raise VsrError(f"{path}: no such file")
    if path.is_dir():
        raise VsrError(f"{path}: is a folder, expected a video file")
    if path.stat().st_size == 0:
        raise VsrError(f"{path}: the file is empty (0 bytes); re-copy or re-download it")
    if not os.access(path, os.R_OK):
        raise VsrError(f"{path}: cannot be read (permission denied); give yourself read permission "
                       "(chmod u+r) or run as a user who can read it")
    try:
        # absolute: FFmpeg would take a name such as "12:30 tape.mp4" for a URL with a protocol "12"
        container = av.open(str(path.absolute()), metadata_errors="replace")
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        hint = ("it looks like an MP4/MOV whose index (moov) is missing, so it is probably truncated; "
                "re-copy or re-download it" if _is_iso_media(path) else "is it a complete video file?")
        raise VsrError(f"{path}: cannot be read as media ({reason}); {hint}") from None
    with container:
        streams = tuple(_stream_info(s) for s in container.streams)
        # a stream PyAV has no decoder context for (damaged headers, an unknown codec) cannot be the video
        videos = [s for s in container.streams.video
                  if s.codec_context is not None and not (int(s.disposition) & ATTACHED_PIC)]
        if not videos and any(s.codec_context is None for s in container.streams.video):
            raise VsrError(f"{path}: its video stream cannot be decoded (damaged headers or an unknown codec); "
                           "the file may be damaged: re-copy or re-download it")
        if not videos:
            kinds = ", ".join(sorted({s.type for s in streams})) or "no streams"
            raise VsrError(f"{path}: has no video stream (found {kinds}); expected a video file")
        vs = min(videos, key=lambda s: _STILL_CODECS.get(s.codec_context.name, 0))  # first of the best kind
        cc = vs.codec_context
        if not cc.pix_fmt or not cc.width or not cc.height:
            raise VsrError(f"{path}: video stream {vs.index} ({cc.name}) has no readable picture size or format; "
                           "the file may be damaged or the codec unsupported")
        duration = container.duration / 1_000_000 if container.duration else None
        if duration is None and vs.duration:
            duration = float(vs.duration * vs.time_base)
        rate = vs.average_rate or vs.guessed_rate
        rate = Fraction(rate) if rate else None
        frames = vs.frames or (int(round(duration * rate)) if duration and rate else None)
        rotation = _display_rotation(container, vs)
        return VideoInfo(
            path=path.absolute(), format_name=container.format.name, duration=duration, streams=streams,
            start_time=container.start_time / 1_000_000 if container.start_time else 0.0,
            video_index=vs.index, codec=cc.name, width=cc.width, height=cc.height, pix_fmt=cc.pix_fmt,
            bit_depth=_bit_depth(cc.pix_fmt), time_base=Fraction(vs.time_base), frame_rate=rate,
            frames=frames, declared_frames=vs.frames, sar=_sar(vs),
            colour=read_colour(cc, height=cc.height), rotation=rotation,
        )


def read_rotation(path: Path | str) -> int:
    """The display matrix's rotation of a file's first video stream (0 when it has none)."""
    with av.open(str(path), metadata_errors="replace") as container:
        return _display_rotation(container, container.streams.video[0]) if container.streams.video else 0


def _display_rotation(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The display matrix's rotation, in degrees counter-clockwise (a phone held upright: 90 or -90 / 270).
    PyAV shows the matrix on decoded frames only, so the first frame is decoded; 0 when none decodes."""
    try:
        for packet in itertools.islice(container.demux(stream), 64):
            for frame in packet.decode():
                return int(round(frame.rotation)) % 360
    except av.error.FFmpegError:  # damage is the decoder's to count and report
        pass
    return 0


def _is_iso_media(path: Path) -> bool:
    """MP4/MOV files start with an 'ftyp' box; when one fails to open, its index is usually missing."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    return head[4:8] in (b"ftyp", b"mdat", b"wide", b"free")


def _stream_info(s: av.stream.Stream) -> StreamInfo:
    if s.type == "attachment":
        codec = s.name or "attachment"
    else:
        codec = s.codec_context.name if s.codec_context is not None else "unknown"
    return StreamInfo(index=s.index, type=s.type, codec=codec, metadata=dict(s.metadata),
                      disposition=int(s.disposition))
