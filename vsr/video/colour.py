"""Colour metadata: read it from the input, resolve what is unspecified, use it for YUV<->RGB and tag it.

Values are FFmpeg's own enum numbers (AVColorSpace, AVColorRange, AVColorPrimaries,
AVColorTransferCharacteristic), the same numbers PyAV exposes on frames and codec contexts, so nothing
is lost in translation. Only the matrix and the range change pixel values in a conversion; primaries
and transfer are carried through as tags (we never convert gamut or gamma).
"""

from __future__ import annotations

from dataclasses import dataclass

import av

# AVColorSpace (the YUV matrix)
RGB, BT709, UNSPECIFIED, FCC, BT470BG, SMPTE170M, SMPTE240M, BT2020_NCL, BT2020_CL = 0, 1, 2, 4, 5, 6, 7, 9, 10
# AVColorRange
RANGE_UNSPECIFIED, RANGE_TV, RANGE_PC = 0, 1, 2

# swscale only knows a few coefficient sets; map every AVColorSpace onto the one it uses.
_SWS_MATRIX = {BT709: 1, FCC: 4, BT470BG: 5, SMPTE170M: 5, SMPTE240M: 7, BT2020_NCL: 9, BT2020_CL: 9}

_MATRIX_NAMES = {RGB: "rgb", BT709: "bt709", FCC: "fcc", BT470BG: "bt470bg", SMPTE170M: "smpte170m",
                 SMPTE240M: "smpte240m", BT2020_NCL: "bt2020nc", BT2020_CL: "bt2020c"}


@dataclass(frozen=True)
class Colour:
    """Colour description of a YUV stream (FFmpeg enum values; 2 = unspecified for the first three)."""

    matrix: int
    primaries: int
    trc: int
    range: int

    @property
    def sws_matrix(self) -> int:
        """The swscale coefficient set for this matrix (BT.601 when unknown, as swscale itself does)."""
        return _SWS_MATRIX.get(self.matrix, 5)

    def describe(self) -> str:
        name = _MATRIX_NAMES.get(self.matrix, str(self.matrix))
        return f"{name}/{'pc' if self.range == RANGE_PC else 'tv'}"


def guess_matrix(height: int) -> int:
    """What players assume for untagged YUV: BT.709 from 720 lines up, BT.601 below (SD tape and DVD)."""
    return BT709 if height >= 720 else SMPTE170M


def read_colour(cc: av.video.codeccontext.VideoCodecContext, *, height: int) -> Colour:
    """Colour of a decoded stream, with the matrix and range resolved so conversions never guess twice.

    RGB sources (Cinepak, PNG, ...) have no matrix: the RGB path needs none, and the output gets BT.709.
    A 'yuvj' pixel format means full range even when the range tag is missing.
    """
    fmt = av.VideoFormat(cc.pix_fmt) if cc.pix_fmt else None
    matrix = int(cc.colorspace)
    if fmt is not None and fmt.is_rgb:
        matrix = RGB
    elif matrix in (UNSPECIFIED, RGB, 3) or matrix not in _SWS_MATRIX:  # 3 = reserved
        matrix = guess_matrix(height)
    rng = int(cc.color_range)
    if rng == RANGE_UNSPECIFIED:
        rng = RANGE_PC if (cc.pix_fmt or "").startswith("yuvj") else RANGE_TV
    return Colour(matrix=matrix, primaries=int(cc.color_primaries), trc=int(cc.color_trc), range=rng)


def output_colour(src: Colour) -> Colour:
    """Colour written to the output: the input's own matrix and range, so nothing shifts.

    An RGB source is encoded as BT.709 limited range (the usual choice for video delivery).
    """
    if src.matrix == RGB:
        return Colour(matrix=BT709, primaries=src.primaries, trc=src.trc, range=RANGE_TV)
    return src


def tag_frame(frame: av.VideoFrame, colour: Colour) -> None:
    """Put the output colour tags on a frame (swscale writes its own, coarser, values)."""
    frame.colorspace = colour.matrix
    frame.color_range = colour.range
    frame.color_primaries = colour.primaries
    frame.color_trc = colour.trc


def tag_codec(cc: av.video.codeccontext.VideoCodecContext, colour: Colour) -> None:
    """Tag the encoder so the bitstream (VUI) and the container both carry the colour description."""
    cc.colorspace = colour.matrix
    cc.color_range = colour.range
    cc.color_primaries = colour.primaries
    cc.color_trc = colour.trc


def to_rgb(frame: av.VideoFrame, colour: Colour, *, width: int, height: int, fmt: str = "rgb24") -> av.VideoFrame:
    """A decoded frame as RGB at ``width`` x ``height``, converted with the stream's own matrix and range
    (swscale alone takes every YUV frame for BT.601 limited range)."""
    return frame.reformat(width=width, height=height, format=fmt, src_colorspace=colour.sws_matrix,
                          src_color_range=colour.range)
