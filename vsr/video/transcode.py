"""transcode(): decode -> process -> encode -> mux for one video file, with every other stream kept.

Three stages run at once, joined by bounded queues (so memory stays flat however long the video is):

    decode thread --(Batch)--> caller's thread runs `process` --(RGB, pts)--> encode thread
                                                                             (segment files)
then the segments are joined losslessly and muxed with the input's other streams by ffmpeg.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from vsr.errors import VsrError
from vsr.video import ingest
from vsr.video.decode import Batch, Decoder, StartPoint, Stopped, put_or_stop
from vsr.video.encode import EncodeLayout, SegmentWriter, concat_segments, plan_layout
from vsr.video.mux import MuxPlan, mux, plan_mux
from vsr.video.options import EncoderChoice, VideoOptions, resolve_encoder
from vsr.video.probe import VideoInfo, probe
from vsr.video.repair import RepairStats
from vsr.video.resume import (Manifest, SegmentRecord, commit_file, input_identity, is_disk_full, output_lock,
                              recorded_identity, work_dir_for)

DEFAULT_SEGMENT_FRAMES = 250  # with resume: at most this much work is redone after a crash

# process(frames (N, H, W, 3), their frame numbers in the video, resets) -> (N, sH, sW, 3); resets[i]:
# frame i starts afresh (nothing carried over from earlier frames: a scene cut, a segment's first frame)
ProcessFn = Callable[[np.ndarray, list[int], list[bool]], np.ndarray]
Identity = Callable[[], dict]


@dataclass
class OutputPlan:
    """Where `transcode` will write one input's output, decided once: the folder loop checks it for a
    finished output and `transcode` writes it."""

    source: VideoInfo
    encoder: EncoderChoice
    mux: MuxPlan

    @property
    def path(self) -> Path:
        return self.mux.path

    def finished(self) -> Path | None:
        """The finished output when there is one: at the planned path, or where the Matroska fallback
        (a stream the container refused while muxing) put it."""
        for p in (self.mux.path, self.mux.fallback_path):
            if p is not None and p.exists():
                return p
        return None

    def recorded_identity(self) -> dict | None:
        """The identity that unfinished work for this output (a resumable run stopped midway) was made
        under, or None."""
        return recorded_identity(work_dir_for(self.path))


def plan_output(src: Path | str, dst: Path | str, options: VideoOptions | None = None) -> OutputPlan:
    """Probe `src` and decide the output's container and path (its suffix may differ from dst's)."""
    options = options or VideoOptions()
    source = probe(src)
    encoder = resolve_encoder(options, high_bit_input=source.high_bit_depth and options.high_bit_depth,
                              input_pix_fmt=source.pix_fmt)
    return OutputPlan(source=source, encoder=encoder,
                      mux=plan_mux(Path(dst).absolute(), source, video_codec=encoder.codec_id,
                                   container=options.container))


@dataclass(frozen=True)
class Part:
    """One segment of a video computed on its own (a task of a cluster job): segment `number`, decoded
    from `start` (from `segment_starts`; None for the first). Its output waits in the work folder until
    the run that joins the video adopts it."""

    number: int
    start: StartPoint | None


@dataclass
class TranscodeResult:
    """What one transcode produced. `notes` are things to tell the user (container switched, damage...)."""

    output: Path
    frames: int
    decode_errors: int
    model_seconds: float  # time spent inside `process`
    wall_seconds: float
    notes: list[str] = field(default_factory=list)
    repairs: dict | None = None  # what tape repair found (RepairStats.report), when it ran


@dataclass
class TranscodeSpec:
    """What one transcode does, settled before any frame is decoded (see `transcode` for the meaning of
    each): the input, the ingest filters and what comes out of them, the encoder, and how `process`
    is fed."""

    src: Path
    source: VideoInfo  # the input as probed
    info: VideoInfo  # the frames after the ingest filters
    filters: ingest.IngestPlan
    encoder: EncoderChoice
    seg_ext: str  # the segments' container: ".mov" or ".mkv" (see _mov_ok)
    process: ProcessFn
    scale: float
    options: VideoOptions
    segment_frames: int | None
    context_frames: int = 0
    detect_cuts: bool = False
    parallel: int = 1
    identity: Identity | None = None  # asked again after each segment (a dict given to transcode is fixed)


def transcode(src: Path | str, dst: Path | str, process: ProcessFn, scale: float,
              options: VideoOptions | None = None, *, segment_frames: int | None = None,
              identity: dict | Identity | None = None, plan: OutputPlan | None = None,
              context_frames: int = 0, detect_cuts: bool = False, parallel: int = 1,
              part: Part | None = None) -> TranscodeResult:
    """Restore one video: every frame through `process`, every other stream copied, timestamps kept.

    process: (frames, indices, resets) -> frames: (N, H, W, 3) RGB -> (N, round(H*scale),
        round(W*scale), 3) RGB of the same dtype; uint8, or uint16 (full 16-bit range) for >8-bit input
        unless options.high_bit_depth is False. `indices` are the frames' numbers in the video, `resets`
        say which frames start afresh (see ProcessFn). It runs in the calling thread while decoding and
        encoding run in background threads, and sees the frames in order.
        Frames reach it after the ingest filters (options.ingest: deinterlace, crop, colour).
    context_frames: before each segment, `process` is given the K frames before it again (their output
        is not encoded), so a process with memory rebuilds it the same way in a resumed run.
    detect_cuts: mark scene cuts as resets (vsr.video.scenes).
    parallel: run `process` on up to this many batches at once, each in a thread of its own (a process
        without memory that spreads its calls over devices); their outputs are encoded in order.
    scale: the factor `process` applies (fractional allowed); output sizes within one pixel are accepted.
    segment_frames: encode the video as independent segments of this many frames (each starts with a
        keyframe), joined losslessly at the end; the result equals the unsegmented one in frames and pts.
    identity: what else decides the output (the model behind `process`), or a function that says it
        (asked again after each segment, so the manifest follows a change such as a smaller tile after
        running out of memory); with options.resume, work done under another identity is not reused.
    plan: the output plan from `plan_output(src, dst, options)`, when the caller made it already.
    part: compute only this segment (needs options.resume) into its own folder inside the work folder;
        nothing is muxed. A later run of the whole video adopts finished parts, in order, as if it had
        made them (so the segments of one video can be computed on several machines at once).

    With options.resume the segments (default 250 frames) and a manifest live in a work folder beside
    the output (`.NAME.vsr-work`); the same call after a crash continues from the last finished segment,
    and the folder is removed on success. Otherwise the output is written beside `dst` under a hidden
    temporary name; either way a failed or interrupted run leaves nothing at the final path. The final
    path may differ from `dst` in its suffix when the container had to change (see `notes`).
    Raises VsrError for unusable input or options (one-line message).
    """
    started = time.perf_counter()
    # absolute, so that no path handed to FFmpeg reads as an option (-name) or a protocol (12:30.mp4)
    src, dst = Path(src).absolute(), Path(dst).absolute()
    options = options or VideoOptions()
    if not scale > 0:
        raise VsrError(f"scale must be positive, got {scale}")
    if segment_frames is not None and segment_frames < 1:
        raise VsrError(f"segment length must be at least 1 frame, got {segment_frames}")
    planned = plan or plan_output(src, dst, options)
    source, encoder, plan = planned.source, planned.encoder, planned.mux
    filters = ingest.resolve(options.ingest, source, scale=scale)
    spec = TranscodeSpec(src=src, source=source, info=filters.apply_to_info(source), filters=filters,
                         encoder=encoder, seg_ext=".mov" if _mov_ok(plan, encoder) else ".mkv", process=process,
                         scale=scale, options=options, segment_frames=segment_frames,
                         context_frames=context_frames, detect_cuts=detect_cuts, parallel=parallel,
                         identity=identity if callable(identity) else None)
    _refuse_overwriting_input(src, plan.path)
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    key = None
    if options.resume:
        spec.segment_frames = segment_frames = segment_frames or DEFAULT_SEGMENT_FRAMES
        key = {"input": input_identity(src), "output": str(plan.path.resolve()), "scale": scale,
               "segment_frames": segment_frames, "video": options.identity(), "ingest": filters.identity(),
               "context_frames": context_frames, "detect_cuts": detect_cuts,
               "process": (identity() if callable(identity) else identity) or {}}
    if part is not None:
        if key is None:
            raise VsrError("a part of a video needs resume (its segment waits in the work folder)")
        result = _transcode_part(spec, plan, key, part)
    else:
        result = _transcode_whole(spec, plan, key)
    result.wall_seconds = time.perf_counter() - started
    return result


def _transcode_part(spec: TranscodeSpec, plan: MuxPlan, key: dict, part: Part) -> TranscodeResult:
    """One segment into its own folder inside the work folder, for the run that joins the video."""
    work = work_dir_for(plan.path) / f"part_{part.number:05d}"
    work.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(work):
        manifest = _disk_full_guard(lambda: Manifest.open(work=work, identity=key), plan.path, None)
        pipe = None
        if manifest.end is None:
            stop = (part.number + 1) * spec.segment_frames
            pipe = _Pipeline(spec, work, start=part.start, manifest=manifest,
                             max_frames=min(stop, spec.options.max_frames or stop))
            _disk_full_guard(pipe.run, plan.path, manifest)
            manifest.end = {"frames": manifest.frames}
            manifest.save()
        return TranscodeResult(output=plan.path, frames=pipe.encoded if pipe else 0,
                               decode_errors=pipe.decoder.errors if pipe else 0,
                               model_seconds=pipe.model_seconds if pipe else 0.0, wall_seconds=0.0)


def _transcode_whole(spec: TranscodeSpec, plan: MuxPlan, key: dict | None) -> TranscodeResult:
    """The whole video, resumable (in the work folder, with a manifest) when there is a ``key``."""
    source = spec.source
    with output_lock(plan.path):  # a second run on this output refuses rather than mixing its work in
        manifest = None
        if key is not None:
            work = work_dir_for(plan.path)
            manifest = _disk_full_guard(lambda: Manifest.open(work=work, identity=key), plan.path, None)
        else:
            work = Path(tempfile.mkdtemp(prefix=f".{plan.path.name}.", suffix=".partial", dir=plan.path.parent))
        notes = [*plan.notes, *spec.encoder.notes, *spec.filters.notes] + (
            [manifest.note] if manifest and manifest.note else [])
        if source.rotation:  # the network ran on the picture as stored; the output is tagged to turn the same way
            turn = {90: "90 degrees counter-clockwise", 180: "180 degrees", 270: "90 degrees clockwise"}.get(
                source.rotation, f"{source.rotation} degrees counter-clockwise")
            notes.append(f"the input is displayed turned {turn} (a rotation tag, as phones write): the output keeps "
                         "the tag and is stored the same way round as the input")
        ok = False
        try:
            result = _disk_full_guard(lambda: _produce(spec, plan, work, manifest, notes), plan.path, manifest)
            ok = True
            return result
        except KeyboardInterrupt:
            if manifest is not None:
                raise KeyboardInterrupt(f"{manifest.frames} finished frames are kept in {work}; run the same "
                                        "command again to resume") from None
            raise
        finally:
            if ok or manifest is None:
                shutil.rmtree(work, ignore_errors=True)


def _mov_ok(plan: MuxPlan, encoder: EncoderChoice) -> bool:
    """MOV keeps the input's exact time base for MP4/MOV outputs; Matroska (1 ms) holds every codec."""
    return plan.container in ("mp4", "mov") and encoder.codec_id in ("h264", "hevc", "prores")


def segment_starts(src: Path | str, scale: float, options: VideoOptions | None = None, *,
                   segment_frames: int | None = None) -> list[StartPoint]:
    """Where each segment after the first starts, found by decoding the video once as `transcode` would
    (ingest filters included): what a `Part` needs to seek straight to its first frame."""
    options = options or VideoOptions()
    segment_frames = segment_frames or DEFAULT_SEGMENT_FRAMES
    source = probe(src)
    filters = ingest.resolve(options.ingest, source, scale=scale)
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    dec = Decoder(filters.apply_to_info(source), q, stop, batch_size=min(segment_frames, 8),
                  max_frames=options.max_frames, high_bit_depth=False, source=source, ingest=filters,
                  segment_frames=segment_frames)
    dec.start()
    starts, frames = [], 0
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            frames = item.indices[-1] + 1  # batches never straddle a segment boundary
            if frames % segment_frames == 0:
                starts.append(StartPoint(index=frames, after_pts=item.pts[-1]))
    finally:
        stop.set()
        dec.thread.join(timeout=10)
    return [s for s in starts if s.index < frames]  # a boundary at the very end starts nothing


def _disk_full_guard(fn: Callable[[], object], out: Path, manifest: Manifest | None):
    """ENOSPC anywhere (Python, PyAV, the ffmpeg binary) becomes one line that says what to do."""
    try:
        return fn()
    except (OSError, RuntimeError, av.error.FFmpegError) as exc:
        if not is_disk_full(exc):
            raise
        kept = (f"; {manifest.frames} finished frames are kept: free some space and run the same command "
                "again to resume") if manifest is not None else "; free some space and try again"
        raise VsrError(f"disk full while writing {out.name} in {out.parent}{kept}") from None


def _produce(spec: TranscodeSpec, plan: MuxPlan, work: Path, manifest: Manifest | None,
             notes: list[str]) -> TranscodeResult:
    """Encode what is not yet encoded, then join the segments and mux them with the other streams."""
    src, info, options, filters, seg_ext = spec.src, spec.info, spec.options, spec.filters, spec.seg_ext
    done_before = manifest.frames if manifest else 0
    pipe = None
    decode_errors = 0
    model_seconds = 0.0
    if manifest is None or manifest.end is None:
        start = None
        if manifest is not None and manifest.segments:
            start = StartPoint(index=manifest.frames, after_pts=manifest.segments[-1].last_pts)
        pipe = _Pipeline(spec, work, start=start, manifest=manifest)
        pipe.run()
        dec = pipe.decoder
        decode_errors, model_seconds = dec.errors, pipe.model_seconds
        notes += [*dec.stats.notes, *(pipe.layout.notes if pipe.layout else ())]
        end_time = None  # with max_frames, the other streams stop where the video stops
        if options.max_frames is not None and dec.stats.decoded >= options.max_frames and dec.last_pts is not None:
            end_time = float((dec.last_pts + dec.last_duration) * info.time_base)
        layout = pipe.layout
        if layout is not None:
            mux_args = dict(size=(layout.width, layout.height), sar=str(layout.sar) if layout.sar else None,
                            time_scale=layout.time_base.denominator)
        else:  # everything had been encoded before; the earlier run recorded the layout
            mux_args = dict(manifest.layout) if manifest is not None and manifest.layout else None
        if mux_args is not None:
            mux_args["end_time"] = end_time
        if manifest is not None:
            manifest.layout = mux_args
            manifest.end = {"frames": manifest.frames}
            manifest.save()
        segments = pipe.segments
    else:
        segments = []
    if manifest is not None:
        segments = [work / r.file for r in manifest.segments]
        mux_args = manifest.layout
    total = len(segments) and (manifest.frames if manifest else pipe.encoded)
    if not total or mux_args is None:
        raise VsrError(f"{src}: no video frame could be decoded; the file is damaged or its codec unsupported")
    video = segments[0] if len(segments) == 1 else work / f"video{seg_ext}"
    if len(segments) > 1:
        concat_segments(segments, video)
    args = dict(mux_args)
    args["size"] = tuple(args["size"])
    args["sar"] = Fraction(args["sar"]) if args["sar"] else None
    partial = work / f"output.partial{plan.path.suffix}"
    try:
        notes += mux(video=video, info=info, plan=plan, out=partial, **args)
    except RuntimeError as exc:
        if plan.container == "mkv" or plan.forced or is_disk_full(exc):
            raise
        # A stream the container should hold was refused: Matroska holds everything.
        notes.append(f"output written as .mkv: {plan.container} refused a stream ({exc})")
        plan.container, plan.path = "mkv", plan.fallback_path
        _refuse_overwriting_input(src, plan.path)
        partial = work / "output.partial.mkv"
        notes += mux(video=video, info=info, plan=plan, out=partial, **args)
    _check_output_file(partial, total)
    os.replace(partial, plan.path)
    if manifest is not None and done_before > manifest.adopted:
        notes.append(f"{done_before - manifest.adopted} of {total} frames came from the earlier, interrupted run")
    repairs = None
    if filters.repair is not None:
        stage = pipe.decoder.repair if pipe is not None else None
        repairs = (stage.stats if stage else RepairStats()).report(filters.repair)
    return TranscodeResult(output=plan.path, frames=total, decode_errors=decode_errors,
                           model_seconds=model_seconds, wall_seconds=0.0, notes=notes, repairs=repairs)


def _check_output_file(path: Path, frames: int) -> None:
    """Last look before the rename: the muxed file opens and holds every encoded frame."""
    with av.open(str(path), metadata_errors="replace") as c:  # tags copied from a damaged input
        written = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    if written != frames:
        raise RuntimeError(f"output check failed: {written} video frames written, {frames} expected")


def _refuse_overwriting_input(src: Path, out: Path) -> None:
    if out.resolve() == src.resolve() or (out.exists() and os.path.samefile(out, src)):
        raise VsrError(f"output {out} would overwrite the input; choose another output name")


class _Pipeline:
    """The decode / process / encode stages of one transcode and their shared state."""

    def __init__(self, spec: TranscodeSpec, work: Path, *, start: StartPoint | None, manifest: Manifest | None,
                 max_frames: int | None = None) -> None:
        """``work``: where the segments go; ``start``: where a resumed run continues; ``max_frames``: a
        part's end (default the options')."""
        options = spec.options
        info = self.info = spec.info
        self.process, self.scale, self.options = spec.process, spec.scale, options
        max_frames = options.max_frames if max_frames is None else max_frames
        self.parallel = spec.parallel
        self.encoder, self.work, self.seg_ext, self.segment_frames = (spec.encoder, work, spec.seg_ext,
                                                                      spec.segment_frames)
        self.manifest = manifest
        self.identity = spec.identity
        self.stop = threading.Event()
        self.decoded_q: queue.Queue = queue.Queue(maxsize=options.queue_batches)
        self.encode_q: queue.Queue = queue.Queue(maxsize=options.queue_batches)
        self.decoder = Decoder(info, self.decoded_q, self.stop, batch_size=options.batch_size,
                               max_frames=max_frames, high_bit_depth=options.high_bit_depth,
                               source=spec.source, ingest=spec.filters, segment_frames=spec.segment_frames,
                               start=start, context_frames=spec.context_frames, detect_cuts=spec.detect_cuts)
        self.layout: EncodeLayout | None = None
        self._first_shape: tuple[int, ...] = ()
        self.first_index = start.index if start else 0  # frames finished by an earlier run
        self.segments: list[Path] = []
        self.encoded = 0
        self.model_seconds = 0.0
        self.encode_error: BaseException | None = None
        self.encode_thread = threading.Thread(target=self._encode_loop, name="vsr-encode", daemon=True)
        total = info.frames
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        self.total = total
        self.bar = tqdm(total=total, initial=self.first_index, unit="frame", desc=info.path.name,
                        disable=options.quiet, dynamic_ncols=True, smoothing=0.1)

    def run(self) -> None:
        self.decoder.start()
        if self.options.progress is not None:  # the start: a caller timing the frames knows when they began
            self.options.progress(self.first_index, self.total)
        pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="vsr-process") if self.parallel > 1 else None
        try:
            pending: deque = deque()  # up to `parallel` batches in flight, emitted in order
            while (batch := self._next_batch()) is not None:
                pending.append((batch, pool.submit(self._process, batch) if pool else self._process(batch)))
                while len(pending) >= self.parallel:
                    self._emit(*pending.popleft())
            while pending:
                self._emit(*pending.popleft())
            if self.encode_thread.is_alive():
                self._to_encoder(None)
                while self.encode_thread.is_alive():  # join in slices so Ctrl-C is seen promptly
                    self.encode_thread.join(timeout=0.2)
            if self.encode_error is not None:
                raise self.encode_error
        finally:
            self.stop.set()  # releases the other threads if we leave early; harmless when done
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            self.bar.close()
            self.decoder.thread.join(timeout=10)
            if self.encode_thread.is_alive():
                self.encode_thread.join(timeout=10)

    def _process(self, batch: Batch) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        return self.process(batch.frames, batch.indices, batch.resets), time.perf_counter() - t0

    def _emit(self, batch: Batch, done: tuple[np.ndarray, float] | Future) -> None:
        out, seconds = done.result() if isinstance(done, Future) else done
        self.model_seconds += seconds  # summed over parallel calls
        self._check_output(batch, out)
        if batch.context:  # warm-up only
            return
        if self.layout is None:
            self.layout = plan_layout(out_h=out.shape[1], out_w=out.shape[2], dtype=out.dtype,
                                      info=self.info, encoder=self.encoder, keep_sar=self.options.keep_sar)
            self.encode_thread.start()
        self._to_encoder((out, batch.pts, batch.durations))

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
        seg = self.segment_frames
        index = self.first_index  # frame number in the whole video: segments are cut at fixed numbers
        first_pts = last_pts = 0
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
                    if writer is None:
                        number = index // seg if seg else 0
                        path = self.work / f"segment_{number:05d}.partial{self.seg_ext}"
                        writer = SegmentWriter(path, layout=self.layout, encoder=self.encoder)
                        first_pts = p
                    writer.write(image, pts=p, duration=d)
                    last_pts = p
                    index += 1
                    if seg and index % seg == 0:  # finished: made durable now, not when the next frame comes
                        self._finish(writer, first_pts, last_pts)
                        writer = None
                self.encoded += len(pts)
                self.bar.update(len(pts))
                if self.options.progress is not None:
                    self.options.progress(self.first_index + self.encoded, self.total)
            if writer is not None:
                self._finish(writer, first_pts, last_pts)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            if writer is not None:
                writer.abort()
            if self.encode_error is None and not self.stop.is_set():
                self.encode_error = exc
            self.stop.set()

    def _finish(self, writer: SegmentWriter, first_pts: int, last_pts: int) -> None:
        """Close a segment; with a manifest, make it durable under its final name and record it."""
        writer.close()
        final = writer.path.with_name(writer.path.name.replace(".partial", ""))
        if self.manifest is None:
            os.replace(writer.path, final)
        else:
            commit_file(writer.path, final)
            if self.manifest.layout is None:
                lay = self.layout
                self.manifest.layout = dict(size=(lay.width, lay.height), sar=str(lay.sar) if lay.sar else None,
                                            end_time=None, time_scale=lay.time_base.denominator)
            if self.identity is not None:  # what the segments from now on are made with
                self.manifest.identity["process"] = json.loads(json.dumps(self.identity()))
            self.manifest.add(SegmentRecord(file=final.name, frames=writer.frames, size=final.stat().st_size,
                                            first_pts=first_pts, last_pts=last_pts))
        self.segments.append(final)
