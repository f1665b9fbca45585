"""Encoding: RGB arrays -> video-only segment files with PyAV, and lossless joining of segments."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsr.video.colour import RANGE_PC, RGB, Colour, output_colour, tag_codec, tag_frame
from vsr.video.options import EncoderChoice
from vsr.video.probe import VideoInfo


@dataclass(frozen=True)
class EncodeLayout:
    """Geometry, timing and colour of the encoded stream; fixed by the first processed batch."""

    width: int  # encoded size
    height: int
    pad_w: int  # edge pixels added so 4:2:0 / 4:2:2 chroma has whole samples
    pad_h: int
    resize: bool  # resample (for square pixels or chroma alignment) during the RGB->YUV conversion
    rgb_format: str  # "rgb24" or "rgb48le": what `process` returned
    time_base: Fraction  # the input stream's: pts pass through unchanged
    rate: Fraction | None  # average rate, for the encoder's rate control only
    colour: Colour
    sar: Fraction | None  # SAR to tag (keep_sar), None for square pixels
    notes: tuple[str, ...] = ()
    pts_shift: int = 0  # added to every pts of a file that starts before zero (VideoInfo.start_shift)


def _chroma_alignment(pix_fmt: str) -> tuple[int, int]:
    """How many luma pixels one chroma sample covers horizontally and vertically (1, 1 for 4:4:4/RGB)."""
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    comps = fmt.components
    if fmt.is_rgb or len(comps) < 3 or not comps[1].width:
        return 1, 1
    return 64 // comps[1].width, 64 // comps[1].height


def plan_layout(*, out_h: int, out_w: int, dtype: np.dtype, info: VideoInfo, encoder: EncoderChoice,
                keep_sar: bool) -> EncodeLayout:
    """Decide the encoded size and tags from what `process` returned and what the input declares."""
    notes: list[str] = []
    ax, ay = _chroma_alignment(encoder.pix_fmt)
    width, height, resize, sar = out_w, out_h, False, None
    if info.sar != 1 and not keep_sar:
        # Non-square pixels: resample the width so square pixels show the same display shape.
        width = max(ax, round(out_w * info.sar / ax) * ax)
        height = max(ay, round(out_h / ay) * ay)
        resize = True
        notes.append(f"non-square pixels (SAR {info.sar}) resampled to square: {width}x{height}")
    elif keep_sar and info.sar != 1:
        sar = info.sar
    pad_w = (-width) % ax if not resize else 0
    pad_h = (-height) % ay if not resize else 0
    if pad_w or pad_h:
        notes.append(f"{out_w}x{out_h} padded to {width + pad_w}x{height + pad_h} by repeating the edge "
                     f"({encoder.pix_fmt} needs even dimensions)")
    colour = output_colour(info.colour)
    if av.VideoFormat(encoder.pix_fmt).is_rgb:
        colour = Colour(matrix=RGB, primaries=colour.primaries, trc=colour.trc, range=RANGE_PC)
    return EncodeLayout(
        width=width + pad_w, height=height + pad_h, pad_w=pad_w, pad_h=pad_h, resize=resize,
        rgb_format="rgb48le" if dtype == np.uint16 else "rgb24", time_base=info.time_base,
        rate=info.frame_rate, colour=colour, sar=sar, notes=tuple(notes), pts_shift=info.start_shift)


def rgb_to_frame(image: np.ndarray, layout: EncodeLayout, pix_fmt: str) -> av.VideoFrame:
    """(H, W, 3) RGB -> an encoder-ready frame: pad or resample, then convert with the output matrix/range."""
    if layout.pad_w or layout.pad_h:
        image = np.pad(image, ((0, layout.pad_h), (0, layout.pad_w), (0, 0)), mode="edge")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=layout.rgb_format)
    out = frame.reformat(
        width=layout.width, height=layout.height, format=pix_fmt,
        dst_colorspace=layout.colour.sws_matrix, dst_color_range=layout.colour.range,
        interpolation="LANCZOS" if layout.resize else None)
    tag_frame(out, layout.colour)
    return out


def _muxer_options(path: Path, time_base: Fraction) -> dict[str, str]:
    """MOV writes a late start as an edit list in the movie time scale (default 1/1000 s): use the
    stream's own, so a segment that starts mid-video keeps its exact first pts."""
    return {"movie_timescale": str(time_base.denominator)} if path.suffix == ".mov" else {}


class SegmentWriter:
    """One video-only file from one encoder instance, so it starts with a keyframe (IDR) and stands alone."""

    def __init__(self, path: Path, *, layout: EncodeLayout, encoder: EncoderChoice) -> None:
        self.path = path
        self.layout = layout
        self.encoder = encoder
        self.frames = 0
        if encoder.name == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per encoder unless told not to
        self.container = av.open(str(path), "w", options=_muxer_options(path, layout.time_base))
        try:
            stream = self.container.add_stream(encoder.name, rate=layout.rate, options=dict(encoder.options))
            stream.width, stream.height = layout.width, layout.height
            stream.pix_fmt = encoder.pix_fmt
            stream.time_base = layout.time_base
            cc = stream.codec_context
            cc.time_base = layout.time_base
            tag_codec(cc, layout.colour)
            if layout.sar is not None:
                cc.sample_aspect_ratio = layout.sar
                stream.sample_aspect_ratio = layout.sar  # Matroska writes display size from the stream SAR
        except BaseException:
            self.container.close()
            raise
        self.stream = stream

    def write(self, image: np.ndarray, *, pts: int, duration: int) -> None:
        frame = rgb_to_frame(image, self.layout, self.encoder.pix_fmt)
        # input pts, input time base: variable frame rate stays variable; muxers would move a negative start
        # to zero on their own, the video without the other streams, so it is moved here and they in mux()
        frame.pts = pts + self.layout.pts_shift
        frame.time_base = self.layout.time_base
        frame.duration = duration  # makes the last frame last as long as in the input
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):  # flush delayed (B-)frames
                self.container.mux(packet)
        finally:
            self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except av.error.FFmpegError:
            pass


def concat_segments(paths: list[Path], out_path: Path) -> None:
    """Join segment files into one stream by remuxing their packets (no re-encode, pts unchanged).

    Every segment starts with a keyframe from a fresh encoder with the same settings, so the streams
    share their headers. Decode timestamps restart with each encoder's reorder delay, which can step back
    at a joint; they are nudged forward (never past the packet's pts), which players ignore anyway.
    """
    assert paths, "no segments to join"
    with av.open(str(paths[0])) as first:
        time_base = first.streams.video[0].time_base
    with av.open(str(paths[0])) as first, \
            av.open(str(out_path), "w", options=_muxer_options(out_path, time_base)) as out:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        ostream = out.add_stream_from_template(template)
        last_dts: int | None = None
        for path in paths:
            with av.open(str(path)) as seg:
                stream = seg.streams.video[0]
                if stream.codec_context.extradata != extradata:
                    raise RuntimeError(f"segment {path.name} was encoded with different headers; cannot join")
                for packet in seg.demux(stream):
                    if packet.size == 0:  # demuxer's end-of-stream marker
                        continue
                    if packet.dts is not None and last_dts is not None and packet.dts <= last_dts:
                        packet.dts = last_dts + 1
                        if packet.pts is not None and packet.dts > packet.pts:
                            raise RuntimeError(f"cannot join segment {path.name}: timestamps too close "
                                               "to the previous segment")
                    if packet.dts is not None:
                        last_dts = packet.dts
                    packet.stream = ostream
                    out.mux(packet)

