"""Decoding: a background thread turns the main video stream into batches of RGB arrays with their pts."""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction

import av
import numpy as np

from vsr.video.colour import to_rgb
from vsr.video.ingest import FrameFilter, IngestPlan
from vsr.video.probe import VideoInfo
from vsr.video.mend import undo_chroma_delay
from vsr.video.repair import RepairStage
from vsr.video.scenes import is_cut, signature


@dataclass
class Batch:
    """Consecutive decoded frames. Timestamps are in the input stream's time base."""

    frames: np.ndarray  # (N, H, W, 3) uint8, or uint16 for >8-bit input
    pts: list[int]
    durations: list[int]
    indices: list[int] = field(default_factory=list)  # frame numbers in the video (after the ingest filters)
    resets: list[bool] = field(default_factory=list)  # frame i starts afresh: first of the video or of a
    # segment's warm-up, or a scene cut
    context: bool = False  # warm-up frames re-emitted before a segment: processed, never encoded


@dataclass
class DecodeStats:
    decoded: int = 0
    failed_packets: int = 0  # packets the decoder rejected
    dropped: int = 0  # frames without a usable (increasing) timestamp
    missing: int = 0  # frames the container index lists but the decoder never produced
    notes: list[str] = field(default_factory=list)


class Stopped(Exception):
    """A pipeline stage gave up because another one stopped (failure or interrupt)."""


def put_or_stop(q: queue.Queue, item: object, stop: threading.Event) -> None:
    """Blocking put that gives up when `stop` is set, so no thread hangs on a full queue after a failure."""
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set():
                raise Stopped from None


@dataclass(frozen=True)
class StartPoint:
    """Where a resumed decode starts: after `index` frames, the last of which had pts `after_pts`
    (output time base). Frames up to there are decoded again (filters need their context) but not passed on."""

    index: int
    after_pts: int


class Phase(Enum):
    """Where one decoding pass stands. A resumed decode passes its start point in one of two ways:

    SEEKING -> EMITTING  after a seek to shortly before the start point, the frames up to it (by pts) are
                         context; the first frame after it must prove continuity (the previous segment's
                         last frame came out of this decode, after enough earlier frames), else MISSED.
    COUNTING -> EMITTING from the start, the first ``start.index`` frames are counted as context (what a
                         seek that MISSED falls back to: a second pass).
    A decode from the start is EMITTING at once; it is DONE at ``max_frames`` (the rest is not decoded).
    """

    SEEKING = "seeking"
    COUNTING = "counting"
    EMITTING = "emitting"
    DONE = "done"
    MISSED = "missed"


class Decoder:
    """Decode the main video stream of `info` into `out` (a bounded queue) from a background thread.

    Puts Batch objects, then None at the end, or the exception if decoding failed. Damaged packets are
    counted and skipped: the frames that do decode keep their own pts, so nothing after them shifts.
    With `ingest`, frames go through its filter graph first and `info` describes what comes out of it
    (`source` is the file as probed). With `segment_frames`, batches never straddle a segment boundary,
    so a resumed run feeds `process` exactly the batches an uninterrupted one did.

    Every segment starts afresh (its first frame, or the first of its warm-up, has a reset), so a
    segment never depends on how the one before it was computed. With `context_frames` K, the K frames
    before each segment are emitted again first, in a batch of their own marked `context`, whether the
    run was resumed there or not. With `detect_cuts`, a scene cut resets too.
    """

    def __init__(self, info: VideoInfo, out: queue.Queue, stop: threading.Event, *, batch_size: int,
                 max_frames: int | None, high_bit_depth: bool, source: VideoInfo | None = None,
                 ingest: IngestPlan | None = None, segment_frames: int | None = None,
                 start: StartPoint | None = None, context_frames: int = 0, detect_cuts: bool = False) -> None:
        self.info = info
        self.source = source or info
        self.ingest = ingest if ingest is not None and ingest.active else None
        self.repair_plan = ingest.repair if ingest is not None and ingest.repair and ingest.repair.active else None
        self.repair: RepairStage | None = None  # one per decoding pass
        self.out = out
        self.stop = stop
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.segment_frames = segment_frames
        self.start_point = start
        self.context_frames = context_frames
        self.detect_cuts = detect_cuts
        self.rgb_format = "rgb48le" if (high_bit_depth and info.high_bit_depth) else "rgb24"
        self.stats = DecodeStats()
        self.last_pts: int | None = None  # of the last frame handed on; read by the caller at the end
        self.last_duration = 0
        self.seek_missed = False  # a resume fell back to counting frames from the start
        # one decoding pass (reset by _decode_pass): its phase, the batch being filled, the frames just
        # before the next one as [frame or RGB array, scene signature or None], and while SEEKING the
        # frames seen up to the start point and whether the start point itself was among them
        self.phase = Phase.EMITTING
        self._batch = Batch(np.empty(0), [], [])
        self._frames: list[np.ndarray] = []
        self._recent: deque[list] = deque(maxlen=max(1, context_frames))
        self._seen_before = 0
        self._hit = False
        self.thread = threading.Thread(target=self._run, name="vsr-decode", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._decode()
            put_or_stop(self.out, None, self.stop)
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            try:
                put_or_stop(self.out, exc, self.stop)
            except Stopped:
                pass

    def _nominal_duration(self, info: VideoInfo) -> int:
        rate = info.frame_rate
        if rate:
            return max(1, round(1 / (rate * info.time_base)))
        return 1

    def _decode(self) -> None:
        if self.start_point is None or self.start_point.index == 0:
            self._decode_pass(Phase.EMITTING)
        elif not self._decode_pass(Phase.SEEKING):
            self.seek_missed = True
            self.stats, self.last_pts, self.last_duration = DecodeStats(), None, 0
            self._decode_pass(Phase.COUNTING)

    @property
    def _finished(self) -> bool:
        """Nothing more to decode in this pass."""
        return self.phase in (Phase.DONE, Phase.MISSED)

    def _decode_pass(self, phase: Phase) -> bool:
        """One pass over the input from ``phase``; False when a seek missed (nothing was handed on)."""
        src = self.source
        self.phase = phase
        self._batch, self._frames = Batch(np.empty(0), [], []), []
        self._recent = deque(maxlen=max(1, self.context_frames))
        self._seen_before, self._hit = 0, False
        self.repair = RepairStage(self.repair_plan) if self.repair_plan else None
        with av.open(str(src.path), metadata_errors="replace") as container:
            stream = container.streams[src.video_index]
            stream.thread_type = "AUTO"  # frame + slice threading in the decoder
            if phase is Phase.SEEKING:
                self._seek_before_start(container, stream)
            graph = FrameFilter(self.ingest, stream, time_base=self.info.time_base) if self.ingest else None
            nominal_src = self._nominal_duration(src)
            last_src_pts: int | None = None
            for packet in self._packets(container, stream):
                if self.stop.is_set():
                    raise Stopped
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    self.stats.failed_packets += 1
                    continue
                for frame in frames:
                    if graph is not None:
                        if frame.pts is None:  # filters need times; the same rule as for unfiltered frames
                            frame.pts = frame.dts if frame.dts is not None else (
                                0 if last_src_pts is None else last_src_pts + nominal_src)
                        last_src_pts = frame.pts
                        for out in graph.feed(frame):
                            self._repaired(out)
                    else:
                        self._repaired(frame)
                    if self._finished:
                        break
                if self._finished:
                    break
            if graph is not None and not self._finished:
                for out in graph.feed(None):
                    self._repaired(out)
                    if self._finished:
                        break
            if self.repair is not None and not self._finished:
                for out, rgb, filled in self.repair.flush():
                    self._emit(out, rgb, filled)
                    if self._finished:
                        break
            if self.phase is Phase.SEEKING:  # the input ends right after the resume point
                self._end_seek()
            if self.phase is Phase.MISSED:
                return False
            if self._frames:
                self._flush()
        self._summarise()
        return True

    def _seek_before_start(self, container: av.container.InputContainer,
                           stream: av.video.stream.VideoStream) -> None:
        """Well before the resume point: the decoder restarts at a keyframe, and the deinterlacer and the
        repair stage (its radius) see the frames around the first one they must produce."""
        src = self.source
        after = Fraction(self.start_point.after_pts) * self.info.time_base / src.time_base
        margin = (8 + self.context_frames + self._radius) * self._nominal_duration(src)
        container.seek(max(0, int(after) - margin), stream=stream, backward=True)

    @property
    def _radius(self) -> int:
        return self.repair_plan.radius if self.repair_plan else 0

    def _repaired(self, frame: av.VideoFrame) -> None:
        """Through the repair stage (which hands frames back a few frames later) to :meth:`_emit`."""
        if self.repair is None:
            self._emit(frame)
            return
        pts = frame.pts if frame.pts is not None else frame.dts
        delay = self.repair_plan.delay_at(None if pts is None else float(pts * self.info.time_base))
        for out, rgb, filled in self.repair.push(frame, self._to_rgb(undo_chroma_delay(frame, delay) if delay
                                                                     else frame)):
            self._emit(out, rgb, filled)
            if self._finished:
                return

    def _emit(self, frame: av.VideoFrame, rgb: np.ndarray | None = None, filled: int = 0) -> None:
        """One decoded (filtered, repaired) frame; ``rgb``: its picture when the repair stage made it, with
        ``filled`` dropouts. Handled as the pass's phase says; the frame that ends SEEKING is emitted."""
        repeat = self.repair is not None and self.repair.stats.repeats(rgb)
        if repeat and self.repair_plan.drop_repeats:  # left out in every phase, as an uninterrupted run does
            pts = frame.pts if frame.pts is not None else frame.dts
            if self.phase is Phase.EMITTING and pts is not None:
                self.repair.stats.see(float(pts * self.info.time_base), 0, True)
            return
        if self.phase is Phase.SEEKING and self._seeking(frame, rgb):
            return
        if self.phase not in (Phase.COUNTING, Phase.EMITTING):
            return
        nominal = self._nominal_duration(self.info)
        pts = self._timestamp(frame, nominal)
        if pts is None:
            self.stats.dropped += 1
            return
        duration = frame.duration or nominal
        self.last_pts, self.last_duration = pts, duration
        if self.phase is Phase.COUNTING:
            self._counting(frame if rgb is None else rgb, pts)
        else:
            self._emitting(frame, rgb, filled, pts, duration, repeat)

    def _seeking(self, frame: av.VideoFrame, rgb: np.ndarray | None) -> bool:
        """SEEKING: True for a frame up to the start point (kept as context); a later one ends the phase."""
        sp = self.start_point
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is not None and pts <= sp.after_pts:
            self._seen_before += 1
            self._recent.append([frame if rgb is None else rgb, None])
            if pts == sp.after_pts:
                self._hit = True
                self.last_pts, self.last_duration = pts, frame.duration or self._nominal_duration(self.info)
            return True
        self._end_seek()
        return False

    def _end_seek(self) -> None:
        """SEEKING ends (at the first frame after the start point, or at the input's end). Continuity is
        proven only if the previous segment's last frame came out of this decode, after enough earlier
        frames to give the deinterlacer and the repair stage their full context; else the seek MISSED."""
        if not self._hit or self._seen_before < self._needed_before():
            self.phase = Phase.MISSED
            return
        self.stats.decoded = self.start_point.index
        self._reached_start()

    def _counting(self, picture: av.VideoFrame | np.ndarray, pts: int) -> None:
        """COUNTING: the same frames an uninterrupted run saw, kept as context up to the start point."""
        self._recent.append([picture, None])
        self.stats.decoded += 1
        if self.stats.decoded == self.start_point.index:
            if pts != self.start_point.after_pts:
                raise RuntimeError(f"resume point mismatch: frame {self.stats.decoded} has pts {pts}, "
                                   f"expected {self.start_point.after_pts}; the input changed")
            self._reached_start()

    def _reached_start(self) -> None:
        """The start point passed: frames are handed on from here, unless max_frames were all before it."""
        done = self.max_frames is not None and self.stats.decoded >= self.max_frames
        self.phase = Phase.DONE if done else Phase.EMITTING

    def _emitting(self, frame: av.VideoFrame, rgb: np.ndarray | None, filled: int, pts: int, duration: int,
                  repeat: bool = False) -> None:
        """EMITTING: the frame into the batch (after the warm-up context at a segment's start)."""
        index = self.stats.decoded
        if rgb is None:
            rgb = self._to_rgb(frame)
        if self.repair is not None:
            self.repair.stats.see(float(pts * self.info.time_base), filled, repeat)
        item = [rgb, None]
        if index == 0 or (self.segment_frames and index % self.segment_frames == 0):
            context = list(self._recent)[-self.context_frames:] if self.context_frames and index else []
            if context:
                self._emit_context(context, first_index=index - len(context))
                reset = self._cut(context[-1], item)
            else:
                reset = True
        else:
            reset = self._cut(self._recent[-1], item)
        self._recent.append(item)
        b = self._batch
        self._frames.append(rgb)
        b.pts.append(pts)
        b.durations.append(duration)
        b.indices.append(index)
        b.resets.append(reset)
        self.stats.decoded += 1
        boundary = self.segment_frames is not None and self.stats.decoded % self.segment_frames == 0
        if len(self._frames) == self.batch_size or boundary:
            self._flush()
        if self.max_frames is not None and self.stats.decoded >= self.max_frames:
            self.phase = Phase.DONE

    def _needed_before(self) -> int:
        """Frames a resumed decode must see before its start point: the warm-up frames, plus the
        deinterlacer's context for the first of them."""
        return min(self.context_frames, self.start_point.index) + (4 if self.ingest else 1) + self._radius

    def _rgb(self, item: list) -> np.ndarray:
        if isinstance(item[0], av.VideoFrame):
            item[0] = self._to_rgb(item[0])
        return item[0]

    def _cut(self, prev: list, cur: list) -> bool:
        """Does `cur` start a new scene after `prev`? Only looked at with detect_cuts."""
        if not self.detect_cuts:
            return False
        for it in (prev, cur):
            if it[1] is None:
                it[1] = signature(self._rgb(it))
        return is_cut(prev[1], cur[1])

    def _emit_context(self, items: list[list], first_index: int) -> None:
        resets = [True] + [self._cut(a, b) for a, b in zip(items, items[1:])]
        frames = np.stack([self._rgb(it) for it in items])
        put_or_stop(self.out, Batch(frames, [], [], indices=list(range(first_index, first_index + len(items))),
                                    resets=resets, context=True), self.stop)

    def _flush(self) -> None:
        b = self._batch
        b.frames = np.stack(self._frames)
        put_or_stop(self.out, b, self.stop)
        self._batch, self._frames = Batch(np.empty(0), [], []), []

    def _packets(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream):
        """Demux until the end, or until the container itself becomes unreadable (truncated or damaged)."""
        packets = container.demux(stream)
        while True:
            try:
                yield next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                self.stats.failed_packets += 1
                self.stats.notes.append(f"the input stops being readable after {self.stats.decoded} frames "
                                        f"({getattr(exc, 'strerror', exc)}); the video ends there")
                return

    def _timestamp(self, frame: av.VideoFrame, nominal: int) -> int | None:
        """The frame's own pts; when missing, its dts or the previous frame's end. None drops the frame:
        a timestamp that does not increase cannot be shown without reordering or overlapping others."""
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            pts = 0 if self.last_pts is None else self.last_pts + self.last_duration
        if self.last_pts is not None and pts <= self.last_pts:
            return None
        return pts

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """RGB with the input's own matrix and range; odd-sized or resized frames come back at stream size."""
        rgb = to_rgb(frame, self.info.colour, width=self.info.width, height=self.info.height, fmt=self.rgb_format)
        return rgb.to_ndarray()  # (H, W, 3)

    def _summarise(self) -> None:
        s, info = self.stats, self.info
        declared = info.declared_frames
        missing = 0
        if declared and self.max_frames is None:
            # AVI and MP4 list every frame in their index; frames listed but never produced were
            # empty or undecodable chunks (their time is covered by the previous picture).
            missing = max(0, declared - s.decoded - s.dropped)
        s.missing = missing
        if s.failed_packets or s.dropped or missing:
            parts = []
            if missing:
                parts.append(f"{missing} of {declared} frames listed by the container did not decode")
            if s.failed_packets:
                parts.append(f"{s.failed_packets} damaged packets were skipped")
            if s.dropped:
                parts.append(f"{s.dropped} frames without increasing timestamps were dropped")
            s.notes.append("; ".join(parts) + ": the previous picture stays on screen for their time, "
                           "later frames keep their timestamps (no desync)")

    @property
    def errors(self) -> int:
        s = self.stats
        return s.failed_packets + s.dropped + s.missing
