"""transcode(): decode -> process -> encode -> mux for one video file, with every other stream kept.

Three stages run at once, joined by bounded queues (so memory stays flat however long the video is):

    decode thread --(Batch)--> caller's thread runs `process` --(RGB, pts)--> encode thread
                                                                             (segment files)
then the segments are joined losslessly and muxed with the input's other streams by ffmpeg.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from vsr.errors import VsrError
from vsr.video.decode import Batch, Decoder, Stopped, put_or_stop
from vsr.video.encode import EncodeLayout, SegmentWriter, concat_segments, plan_layout
from vsr.video.mux import CONTAINERS, mux, plan_mux
from vsr.video.options import EncoderChoice, VideoOptions, resolve_encoder
from vsr.video.probe import VideoInfo, probe

ProcessFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class TranscodeResult:
    """What one transcode produced. `notes` are things to tell the user (container switched, damage...)."""

    output: Path
    frames: int
    decode_errors: int
    model_seconds: float  # time spent inside `process`
    wall_seconds: float
    notes: list[str] = field(default_factory=list)


def transcode(src: Path | str, dst: Path | str, process: ProcessFn, scale: float,
              options: VideoOptions | None = None, *, segment_frames: int | None = None) -> TranscodeResult:
    """Restore one video: every frame through `process`, every other stream copied, timestamps kept.

    process: (N, H, W, 3) RGB -> (N, round(H*scale), round(W*scale), 3) RGB of the same dtype; uint8,
        or uint16 (full 16-bit range) for >8-bit input unless options.high_bit_depth is False.
        It runs in the calling thread while decoding and encoding run in background threads.
    scale: the factor `process` applies (fractional allowed); output sizes within one pixel are accepted.
    segment_frames: encode the video as independent segments of this many frames (each starts with a
        keyframe), joined losslessly at the end; the result equals the unsegmented one in frames and pts.

    The output is written beside `dst` under a hidden temporary name and renamed into place only when
    complete, so a failed or interrupted run leaves nothing at the final path. The final path may differ
    from `dst` in its suffix when the container had to change (see `notes`).
    Raises VsrError for unusable input or options (one-line message).
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    options = options or VideoOptions()
    if not scale > 0:
        raise VsrError(f"scale must be positive, got {scale}")
    if segment_frames is not None and segment_frames < 1:
        raise VsrError(f"segment length must be at least 1 frame, got {segment_frames}")
    info = probe(src)
    encoder = resolve_encoder(options, high_bit_input=info.high_bit_depth and options.high_bit_depth)
    plan = plan_mux(dst, info, video_codec=encoder.codec_id, container=options.container)
    _refuse_overwriting_input(src, plan.path)
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{plan.path.name}.", suffix=".partial", dir=plan.path.parent))
    try:
        # MOV keeps the input's exact time base for MP4/MOV outputs; Matroska (1 ms) holds every codec.
        mov_ok = plan.container in ("mp4", "mov") and encoder.codec_id in ("h264", "hevc", "prores")
        seg_ext = ".mov" if mov_ok else ".mkv"
        pipe = _Pipeline(info, process, scale, options, encoder, work, seg_ext, segment_frames)
        pipe.run()
        if pipe.encoded == 0:
            raise VsrError(f"{src}: no video frame could be decoded; the file is damaged or its codec unsupported")
        video = pipe.segments[0] if len(pipe.segments) == 1 else work / f"video{seg_ext}"
        if len(pipe.segments) > 1:
            concat_segments(pipe.segments, video)
        dec, layout = pipe.decoder, pipe.layout
        end_time = None  # with max_frames, the other streams stop where the video stops
        if options.max_frames is not None and dec.stats.decoded >= options.max_frames and dec.last_pts is not None:
            end_time = float((dec.last_pts + dec.last_duration) * info.time_base)
        notes = [*plan.notes, *dec.stats.notes, *layout.notes]
        mux_args = dict(size=(layout.width, layout.height), sar=layout.sar, end_time=end_time,
                        time_scale=layout.time_base.denominator)
        partial = work / f"output.partial{plan.path.suffix}"
        try:
            mux(video=video, info=info, plan=plan, out=partial, **mux_args)
        except RuntimeError as exc:
            if plan.container == "mkv" or plan.forced:
                raise
            # A stream the container should hold was refused: Matroska holds everything.
            notes.append(f"output written as .mkv: {plan.container} refused a stream ({exc})")
            plan.container, plan.path = "mkv", plan.path.with_suffix(CONTAINERS["mkv"][1])
            _refuse_overwriting_input(src, plan.path)
            partial = work / "output.partial.mkv"
            mux(video=video, info=info, plan=plan, out=partial, **mux_args)
        _check_output_file(partial, pipe.encoded)
        os.replace(partial, plan.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TranscodeResult(output=plan.path, frames=pipe.encoded, decode_errors=pipe.decoder.errors,
                           model_seconds=pipe.model_seconds, wall_seconds=time.perf_counter() - started,
                           notes=notes)


def planned_output(src: Path | str, dst: Path | str, options: VideoOptions | None = None) -> Path:
    """The path `transcode(src, dst, ...)` will write (its suffix may differ from dst's)."""
    options = options or VideoOptions()
    info = probe(src)
    encoder = resolve_encoder(options, high_bit_input=info.high_bit_depth and options.high_bit_depth)
    return plan_mux(Path(dst), info, video_codec=encoder.codec_id, container=options.container).path


def _check_output_file(path: Path, frames: int) -> None:
    """Last look before the rename: the muxed file opens and holds every encoded frame."""
    with av.open(str(path)) as c:
        written = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    if written != frames:
        raise RuntimeError(f"output check failed: {written} video frames written, {frames} expected")


def _refuse_overwriting_input(src: Path, out: Path) -> None:
    if out.resolve() == src.resolve() or (out.exists() and os.path.samefile(out, src)):
        raise VsrError(f"output {out} would overwrite the input; choose another output name")


class _Pipeline:
    """The decode / process / encode stages of one transcode and their shared state."""

    def __init__(self, info: VideoInfo, process: ProcessFn, scale: float, options: VideoOptions,
                 encoder: EncoderChoice, work: Path, seg_ext: str, segment_frames: int | None) -> None:
        self.info, self.process, self.scale, self.options = info, process, scale, options
        self.encoder, self.work, self.seg_ext, self.segment_frames = encoder, work, seg_ext, segment_frames
        self.stop = threading.Event()
        self.decoded_q: queue.Queue = queue.Queue(maxsize=options.queue_batches)
        self.encode_q: queue.Queue = queue.Queue(maxsize=options.queue_batches)
        self.decoder = Decoder(info, self.decoded_q, self.stop, batch_size=options.batch_size,
                               max_frames=options.max_frames, high_bit_depth=options.high_bit_depth)
        self.layout: EncodeLayout | None = None
        self._first_shape: tuple[int, ...] = ()
        self.segments: list[Path] = []
        self.encoded = 0
        self.model_seconds = 0.0
        self.encode_error: BaseException | None = None
        self.encode_thread = threading.Thread(target=self._encode_loop, name="vsr-encode", daemon=True)
        total = info.frames
        if options.max_frames is not None:
            total = min(total, options.max_frames) if total else options.max_frames
        self.total = total
        self.bar = tqdm(total=total, unit="frame", desc=info.path.name, disable=options.quiet,
                        dynamic_ncols=True, smoothing=0.1)

    def run(self) -> None:
        self.decoder.start()
        try:
            while (batch := self._next_batch()) is not None:
                t0 = time.perf_counter()
                out = self.process(batch.frames)
                self.model_seconds += time.perf_counter() - t0
                self._check_output(batch, out)
                if self.layout is None:
                    self.layout = plan_layout(out_h=out.shape[1], out_w=out.shape[2], dtype=out.dtype,
                                              info=self.info, encoder=self.encoder,
                                              keep_sar=self.options.keep_sar)
                    self.encode_thread.start()
                self._to_encoder((out, batch.pts, batch.durations))
            if self.encode_thread.is_alive():
                self._to_encoder(None)
                while self.encode_thread.is_alive():  # join in slices so Ctrl-C is seen promptly
                    self.encode_thread.join(timeout=0.2)
            if self.encode_error is not None:
                raise self.encode_error
        finally:
            self.stop.set()  # releases the other threads if we leave early; harmless when done
            self.bar.close()
            self.decoder.thread.join(timeout=10)
            if self.encode_thread.is_alive():
                self.encode_thread.join(timeout=10)

    def _next_batch(self) -> Batch | None:
        while True:
            if self.encode_error is not None:
                raise self.encode_error
            try:
                item = self.decoded_q.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def _to_encoder(self, item: object) -> None:
        try:
            put_or_stop(self.encode_q, item, self.stop)
        except Stopped:
            if self.encode_error is not None:
                raise self.encode_error from None
            raise

    def _check_output(self, batch: Batch, out: object) -> None:
        n, h, w, _ = batch.frames.shape
        if not isinstance(out, np.ndarray) or out.ndim != 4 or out.shape[0] != n or out.shape[3] != 3:
            got = getattr(out, "shape", type(out).__name__)
            raise ValueError(f"process must return (N, H, W, 3) RGB for {n} frames, got {got}")
        if out.dtype != batch.frames.dtype:
            raise ValueError(f"process must return {batch.frames.dtype} like its input, got {out.dtype}")
        if self.layout is None:
            eh, ew = h * self.scale, w * self.scale
            if abs(out.shape[1] - eh) > 1 or abs(out.shape[2] - ew) > 1:
                raise ValueError(f"process returned {out.shape[2]}x{out.shape[1]} frames for {w}x{h} input "
                                 f"at scale {self.scale}; expected about {ew:g}x{eh:g}")
            self._first_shape = out.shape[1:]
        elif out.shape[1:] != self._first_shape:
            raise ValueError(f"process changed its output size mid-video: {out.shape[1:]} != {self._first_shape}")

    def _encode_loop(self) -> None:
        writer: SegmentWriter | None = None
        try:
            while True:
                try:
                    item = self.encode_q.get(timeout=0.2)
                except queue.Empty:
                    if self.stop.is_set():
                        raise Stopped from None
                    continue
                if item is None:
                    break
                frames, pts, durations = item
                for image, p, d in zip(frames, pts, durations):
                    if writer is None or (self.segment_frames and writer.frames >= self.segment_frames):
                        if writer is not None:
                            writer.close()
                        path = self.work / f"segment_{len(self.segments):05d}{self.seg_ext}"
                        self.segments.append(path)
                        writer = SegmentWriter(path, layout=self.layout, encoder=self.encoder)
                    writer.write(image, pts=p, duration=d)
                self.encoded += len(pts)
                self.bar.update(len(pts))
                if self.options.progress is not None:
                    self.options.progress(self.encoded, self.total)
            if writer is not None:
                writer.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            if writer is not None:
                writer.abort()
            if self.encode_error is None and not self.stop.is_set():
                self.encode_error = exc
            self.stop.set()
