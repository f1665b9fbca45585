"""Decoding: a background thread turns the main video stream into batches of RGB arrays with their pts."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import av
import numpy as np

from vsr.video.probe import VideoInfo


@dataclass
class Batch:
    """Consecutive decoded frames. Timestamps are in the input stream's time base."""

    frames: np.ndarray  # (N, H, W, 3) uint8, or uint16 for >8-bit input
    pts: list[int]
    durations: list[int]


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


class Decoder:
    """Decode the main video stream of `info` into `out` (a bounded queue) from a background thread.

    Puts Batch objects, then None at the end, or the exception if decoding failed. Damaged packets are
    counted and skipped: the frames that do decode keep their own pts, so nothing after them shifts.
    """

    def __init__(self, info: VideoInfo, out: queue.Queue, stop: threading.Event, *, batch_size: int,
                 max_frames: int | None, high_bit_depth: bool) -> None:
        self.info = info
        self.out = out
        self.stop = stop
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.rgb_format = "rgb48le" if (high_bit_depth and info.high_bit_depth) else "rgb24"
        self.stats = DecodeStats()
        self.last_pts: int | None = None  # of the last frame handed on; read by the caller at the end
        self.last_duration = 0
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

    def _nominal_duration(self) -> int:
        rate = self.info.frame_rate
        if rate:
            return max(1, round(1 / (rate * self.info.time_base)))
        return 1

    def _decode(self) -> None:
        info = self.info
        with av.open(str(info.path), metadata_errors="replace") as container:
            stream = container.streams[info.video_index]
            stream.thread_type = "AUTO"  # frame + slice threading in the decoder
            nominal = self._nominal_duration()
            images: list[np.ndarray] = []
            pts_list: list[int] = []
            durations: list[int] = []
            for packet in self._packets(container, stream):
                if self.stop.is_set():
                    raise Stopped
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    self.stats.failed_packets += 1
                    continue
                for frame in frames:
                    pts = self._timestamp(frame, nominal)
                    if pts is None:
                        self.stats.dropped += 1
                        continue
                    images.append(self._to_rgb(frame))
                    pts_list.append(pts)
                    durations.append(frame.duration or nominal)
                    self.last_pts, self.last_duration = pts, durations[-1]
                    self.stats.decoded += 1
                    if len(images) == self.batch_size:
                        put_or_stop(self.out, Batch(np.stack(images), pts_list, durations), self.stop)
                        images, pts_list, durations = [], [], []
                    if self.max_frames is not None and self.stats.decoded >= self.max_frames:
                        break
                if self.max_frames is not None and self.stats.decoded >= self.max_frames:
                    break
            if images:
                put_or_stop(self.out, Batch(np.stack(images), pts_list, durations), self.stop)
        self._summarise()

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
        c = self.info.colour
        rgb = frame.reformat(width=self.info.width, height=self.info.height, format=self.rgb_format,
                             src_colorspace=c.sws_matrix, src_color_range=c.range)
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
