"""Ingest filters for analog sources: deinterlacing, cropping (black borders, VHS head switching) and
BT.601 -> BT.709 conversion, run as an FFmpeg filter graph on decoded frames in the decode thread.

Detection (interlacing, black borders) runs FFmpeg's own `idet` and `cropdetect` on a sample of the
input through the ffmpeg binary; the head-switching band (distorted lines at the bottom of VHS captures,
which are not black, so cropdetect cannot see them) is found from decoded frames.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field, replace
from fractions import Fraction

import av
import av.filter
import ffmpeg
import numpy as np

from vsr.errors import VsrError
from vsr.video.colour import BT470BG, BT709, SMPTE170M, Colour
from vsr.video.ffmpeg import compile_cmd, execute, log_tail
from vsr.video.probe import VideoInfo
from vsr.video.mend import head_switching_band, yuv_planes
from vsr.video.repair import RepairOptions, RepairPlan, chroma_delay_by_shot, plan_repair

DEINTERLACERS = ("auto", "off", "bwdif", "yadif")
COLOUR_MODES = ("auto", "bt709", "keep")
LONG_CLIP = 120.0  # s: from this length on, the chroma delay is measured along the clip too
SAMPLE_FRAMES = 240  # enough fields for idet's multi-frame vote, quick even for SD on a slow CPU
HD_LINES = 720  # outputs with at least this many lines are HD: BT.709 is what players assume there


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    """What to do to decoded frames before they reach `process`.

    deinterlace: auto (idet decides, on a sample), off, bwdif or yadif (always).
    double_rate: one output frame per field (50/60 frames per second from 25/30 interlaced).
    crop: None, "auto" (black borders and the VHS head-switching band) or "W:H:X:Y" in input pixels.
    colour: auto converts BT.601 to BT.709 when the output is HD (>= 720 lines), bt709 always converts
        BT.601 input, keep never converts (the BT.601 tags stay).
    repair: tape repair after the filters (vsr.video.repair).
    """

    deinterlace: str = "off"
    double_rate: bool = False
    crop: str | None = None
    colour: str = "auto"
    repair: RepairOptions = RepairOptions()

    def __post_init__(self) -> None:
        if self.deinterlace not in DEINTERLACERS:
            raise VsrError(f"deinterlace must be one of {', '.join(DEINTERLACERS)}, got {self.deinterlace!r}")
        if self.colour not in COLOUR_MODES:
            raise VsrError(f"colour must be one of {', '.join(COLOUR_MODES)}, got {self.colour!r}")
        if self.crop not in (None, "auto"):
            parse_crop(self.crop)


@dataclass(frozen=True)
class Crop:
    width: int
    height: int
    x: int
    y: int

    def __str__(self) -> str:
        return f"{self.width}:{self.height}:{self.x}:{self.y}"


def parse_crop(text: str) -> Crop:
    m = re.fullmatch(r"(\d+):(\d+):(\d+):(\d+)", text.strip())
    if not m:
        raise VsrError(f"crop must be auto or W:H:X:Y (whole pixels), got {text!r}")
    crop = Crop(*(int(g) for g in m.groups()))
    if crop.width < 2 or crop.height < 2:
        raise VsrError(f"crop {text} leaves less than 2x2 pixels")
    return crop


@dataclass(frozen=True)
class IngestPlan:
    """The resolved filters for one input (detection done). Part of a resume manifest's identity."""

    deinterlacer: str | None = None  # "bwdif" / "yadif"
    parity: str = "auto"  # "tff" / "bff" / "auto" (the stream's own flags)
    double_rate: bool = False
    crop: Crop | None = None
    colour_from: str | None = None  # the colorspace filter's input preset, when converting to BT.709
    full_range: bool = False
    repair: RepairPlan | None = None  # tape repair on the filtered frames
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def active(self) -> bool:
        """There are FFmpeg filters to run."""
        return bool(self.deinterlacer or self.crop or self.colour_from)

    def identity(self) -> dict[str, object]:
        ident = {"deinterlacer": self.deinterlacer, "parity": self.parity, "double_rate": self.double_rate,
                 "crop": str(self.crop) if self.crop else None, "colour_from": self.colour_from}
        if self.repair is not None and self.repair.active:
            ident["repair"] = self.repair.identity()
        return ident

    def filters(self) -> list[tuple[str, str]]:
        """(filter name, arguments), in graph order. Crop first: the deinterlacer then sees whole fields
        (y is kept even) and the colour filter has less to convert."""
        chain = []
        if self.crop:
            chain.append(("crop", f"{self.crop}:exact=1"))
        if self.deinterlacer:
            mode = "send_field" if self.double_rate else "send_frame"
            chain.append((self.deinterlacer, f"mode={mode}:parity={self.parity}:deint=all"))
        if self.colour_from:
            rng = "pc" if self.full_range else "tv"
            chain.append(("colorspace", f"all=bt709:iall={self.colour_from}:irange={rng}:range={rng}:fast=0"))
        return chain

    def apply_to_info(self, info: VideoInfo) -> VideoInfo:
        """What the frames coming out of the filters look like: size, timing, colour."""
        out = info
        if self.crop:
            out = replace(out, width=self.crop.width, height=self.crop.height)
        if self.deinterlacer and self.double_rate:
            # Two frames per input frame at field times: half the time base keeps every pts exact.
            out = replace(out, time_base=info.time_base / 2,
                          frame_rate=info.frame_rate * 2 if info.frame_rate else None,
                          frames=info.frames * 2 if info.frames else None,
                          declared_frames=info.declared_frames * 2)
        if self.colour_from:
            out = replace(out, colour=Colour(matrix=BT709, primaries=1, trc=1, range=info.colour.range))
        return out


def resolve(options: IngestOptions, info: VideoInfo, *, scale: float) -> IngestPlan:
    """Run the detections `options` ask for and decide the filters for this input."""
    notes: list[str] = []
    deinterlacer, parity = None, "auto"
    if options.deinterlace != "off":
        found, order, counts = detect_interlace(info)
        if options.deinterlace == "auto":
            if found:
                deinterlacer, parity = "bwdif", order
                notes.append(f"interlaced ({order.upper()}, idet {counts}): deinterlaced with bwdif"
                             + (" at field rate" if options.double_rate else ""))
        else:
            deinterlacer, parity = options.deinterlace, order if found else "auto"
    crop = None
    if options.crop == "auto":  # the head-switching band stays when tape repair mends it
        crop = detect_crop(info, band="head-switching" not in options.repair.wanted())
        if crop is not None:
            notes.append(f"cropped to {crop} (black borders / head-switching band)")
    elif options.crop:
        crop = parse_crop(options.crop)
        if crop.x + crop.width > info.width or crop.y + crop.height > info.height:
            raise VsrError(f"crop {crop} does not fit in the {info.width}x{info.height} picture")
    colour_from = None
    height = crop.height if crop else info.height
    is_601 = info.colour.matrix in (SMPTE170M, BT470BG)
    if is_601 and (options.colour == "bt709" or (options.colour == "auto" and round(height * scale) >= HD_LINES)):
        # 625-line (PAL) primaries when tagged BT.470BG or 576 lines, else 525-line (NTSC).
        pal = info.colour.matrix == BT470BG or info.colour.primaries == 5 or info.height in (576, 288)
        colour_from = "bt601-6-625" if pal else "bt601-6-525"
        notes.append("BT.601 colour converted to BT.709 for the HD output (--colour keep leaves it BT.601)")
    repair = None
    if options.repair.wanted() or options.repair.chroma_delay is not None:
        def cropped(runs: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
            return [[f[crop.y:crop.y + crop.height, crop.x:crop.x + crop.width] if crop else f for f in run]
                    for run in runs]

        runs = cropped(sample_runs(info, length=5 if "jitter" in options.repair.wanted() else 1))
        repair = plan_repair(options.repair, [run[0] for run in runs], runs)
        if "chroma-delay" in options.repair.wanted() and options.repair.chroma_delay is None:
            spans = shots(info)
            if len(spans) > 1:
                repair = chroma_delay_by_shot(repair, spans,
                                              lambda span: [run[0] for run in cropped(sample_runs(info, span=span))])
        notes += repair.notes
    return IngestPlan(deinterlacer=deinterlacer, parity=parity,
                      double_rate=bool(deinterlacer and options.double_rate), crop=crop,
                      colour_from=colour_from, full_range=info.colour.range == 2, repair=repair, notes=tuple(notes))


def _run_detect(info: VideoInfo, vf: str, *, what: str, off: str, frames: int | None = SAMPLE_FRAMES) -> str:
    """ffmpeg with one detection filter over a sample (``frames`` None: the whole video); returns its log (the
    filters report at info level).

    A failure is one line naming the input and the option that skips this detection (`off`).
    """
    start = {}
    if frames and info.duration and info.duration > 60:  # skip leaders/titles: sample from a tenth in
        start = {"ss": f"{info.duration / 10:.3f}"}
    # noautorotate: the filters see the stored picture, as the decoder hands it on (not turned for display)
    sample = ffmpeg.input(str(info.path), noautorotate=None, **start)[str(info.video_index)]
    # -vf rather than ffmpeg-python's filter graph: the filter runs on the mapped input stream, as a
    # simple filter, with no -filter_complex.
    output = ffmpeg.output(sample, "-", format="null", vf=vf, an=None,
                           **({"frames:v": str(frames)} if frames else {}))
    cmd = compile_cmd(output, global_args=["-nostats"], loglevel="info", overwrite=False)
    limit = 600 if frames else max(600.0, 2 * (info.duration or 0.0))  # a whole video: twice its length at most
    try:
        proc = execute(cmd, timeout=limit)
    except subprocess.TimeoutExpired:
        on = f"a {frames}-frame sample" if frames else "it"
        raise VsrError(f"{info.path}: ffmpeg took over {limit / 60:.0f} minutes on {on} for {what}; check the file "
                       f"or use {off}") from None
    if proc.returncode != 0:
        tail = log_tail(proc.stderr, lines=2) or f"exit code {proc.returncode}"
        raise VsrError(f"{info.path}: ffmpeg could not read it for {what} ({tail}); check the file or use "
                       f"{off}")
    return proc.stderr


def detect_interlace(info: VideoInfo) -> tuple[bool, str, str]:
    """(interlaced?, "tff"/"bff", vote summary) from idet's multi-frame detection on a sample."""
    log = _run_detect(info, "idet", what="interlace detection", off="--deinterlace off")
    multi = re.findall(r"Multi frame detection: TFF:\s*(\d+) BFF:\s*(\d+) Progressive:\s*(\d+)", log)
    single = re.findall(r"Single frame detection: TFF:\s*(\d+) BFF:\s*(\d+) Progressive:\s*(\d+)", log)
    if not multi or not single:
        return False, "tff", "no verdict"
    tff, bff, prog = (int(v) for v in multi[-1])
    s_tff, s_bff, s_prog = (int(v) for v in single[-1])
    counts = f"tff {tff}, bff {bff}, progressive {prog}"
    # Interlaced when combed frames clearly outvote progressive ones, frame by frame as well as over
    # time: fine horizontal line patterns fool the multi-frame vote alone. Soft telecine and static
    # scenes come out progressive or undetermined and are left alone.
    interlaced = tff + bff >= 4 and tff + bff > 2 * prog and s_tff + s_bff > 2 * s_prog
    return interlaced, ("tff" if tff >= bff else "bff"), counts


def detect_crop(info: VideoInfo, *, band: bool = True) -> Crop | None:
    """Black borders (cropdetect over a sample) plus (``band``) the head-switching band at the bottom."""
    x, y, w, h = 0, 0, info.width, info.height
    log = _run_detect(info, "cropdetect=limit=24:round=2:reset=0", what="border detection",
                      off="--crop off")
    found = re.findall(r"crop=(\d+):(\d+):(\d+):(\d+)", log)
    if found:
        cw, ch, cx, cy = (int(v) for v in found[-1])
        if cw >= info.width // 4 and ch >= info.height // 4:  # an all-black sample says nothing
            x, y, w, h = cx, cy, cw, ch
    if band:
        h -= head_switching_rows(info, top=y, bottom=y + h)
    x, y = x - x % 2, y - y % 2  # whole chroma samples for 4:2:0
    w, h = min(w - w % 2, info.width - x), min(h - h % 2, info.height - y)
    if (x, y, w, h) == (0, 0, info.width, info.height):
        return None
    return Crop(w, h, x, y)


def head_switching_rows(info: VideoInfo, *, top: int, bottom: int, samples: int = 24) -> int:
    """How many rows at the bottom of the picture area (rows top..bottom) are the VHS head-switching band."""
    lumas = []
    with av.open(str(info.path)) as c:
        stream = c.streams[info.video_index]
        for i, frame in enumerate(c.decode(stream)):
            if i >= samples:
                break
            lumas.append(frame.to_ndarray(format="gray").astype(np.float32)[top:bottom])
    return head_switching_band(lumas)


def scene_cuts(info: VideoInfo) -> list[float]:
    """Times (s) where a new shot starts, over the whole video (ffmpeg's scene score on a small copy)."""
    log = _run_detect(info, "scale=96:-2,select='gt(scene,0.4)',showinfo", what="scene detection",
                      off="--chroma-delay DX,DY", frames=None)
    return [float(t) for t in re.findall(r"pts_time:\s*([0-9.]+)", log)]


def shots(info: VideoInfo) -> list[tuple[float, float]]:
    """(start, end) in s of each shot of a clip of ``LONG_CLIP`` s or more (a tape can hold recordings made on
    different decks, which change at a cut); one span for a shorter one."""
    duration = info.duration or 0.0
    starts = [0.0, *(t for t in scene_cuts(info) if 0.0 < t < duration)] if duration >= LONG_CLIP else [0.0]
    return list(zip(starts, [*starts[1:], duration]))


def sample_runs(info: VideoInfo, count: int = 6, length: int = 1, span: tuple[float, float] | None = None
                ) -> list[list[np.ndarray]]:
    """``count`` runs of ``length`` consecutive frames spread over the input (past its first tenth, where
    leaders and titles are) or over ``span`` (start, end in s), as :func:`vsr.video.repair.yuv_planes`; runs
    from the start of a file too short or unseekable for that."""
    def run_at(start: float | None, n: int) -> list[np.ndarray]:
        # a container of its own per run: a decoder that met the end of the file does not decode after a seek
        with av.open(str(info.path), metadata_errors="replace") as c:
            stream = c.streams[info.video_index]
            if start is not None:
                c.seek(int(start * av.time_base), backward=True)
            frames = (f for f in c.decode(stream) if start is None or f.time is None or f.time >= start - 1e-6)
            return [yuv_planes(f) for _, f in zip(range(n), frames)]  # not the frames before a seek's target

    runs: list[list[np.ndarray]] = []
    first, last = span or (0.0, info.duration or 0.0)
    if last - first > 2.0 or span:
        try:
            runs = [run_at(first + (0.1 + 0.8 * k / count) * (last - first), length) for k in range(count)]
        except av.error.FFmpegError:
            runs = []
    if len(runs) < count or not all(runs):  # in order from the start instead
        frames = run_at(None, count * length)
        runs = [frames[i:i + length] for i in range(0, len(frames), length)]
    return runs


class FrameFilter:
    """An FFmpeg filter graph fed decoded frames; returns what comes out (possibly more or fewer), with
    pts in `time_base` (yadif/bwdif always work in half the input time base, even at frame rate)."""

    def __init__(self, plan: IngestPlan, stream: av.video.stream.VideoStream, *, time_base: Fraction) -> None:
        self.time_base = time_base
        self.graph = av.filter.Graph()
        node = self.graph.add_buffer(template=stream)
        for name, args in plan.filters():
            nxt = self.graph.add(name, args)
            node.link_to(nxt)
            node = nxt
        sink = self.graph.add("buffersink")
        node.link_to(sink)
        self.graph.configure()

    def feed(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Push one frame (None: the end) and pull every frame that is ready."""
        self.graph.push(frame)
        out = []
        while True:
            try:
                f = self.graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
            tb = Fraction(f.time_base) if f.time_base else self.time_base
            if tb != self.time_base:
                if f.pts is not None:
                    f.pts = round(f.pts * tb / self.time_base)
                if f.duration:
                    f.duration = max(1, round(f.duration * tb / self.time_base))
                f.time_base = self.time_base
            out.append(f)


def combing(gray: np.ndarray, threshold: float = 12.0) -> float:
    """Share of pixels that are combed: brighter or darker than both vertical neighbours by more than
    `threshold` (8-bit levels), the zig-zag that woven fields of a moving picture leave. A progressive
    picture scores near 0 except on thin horizontal lines; a woven one with motion scores high."""
    y = gray.astype(np.float32)
    up, mid, down = y[:-2], y[1:-1], y[2:]
    combed = ((mid - up) * (mid - down)) > threshold * threshold
    return float(combed.mean())
