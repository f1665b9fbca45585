"""Crash safety: an interrupted video continues from its last finished segment and the result equals an
uninterrupted run (frame-exact with a lossless codec, audio bit-identical)."""

from __future__ import annotations

import errno
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analog_media as am  # noqa: E402
import media  # noqa: E402

from vsr.errors import VsrError  # noqa: E402
from vsr.video import IngestOptions, VideoOptions, probe, transcode  # noqa: E402
from vsr.video import encode as encode_mod  # noqa: E402
from vsr.video.decode import Decoder, StartPoint  # noqa: E402
from vsr.video.resume import MANIFEST, work_dir_for  # noqa: E402
from vsr.video.transcode import Part, segment_starts  # noqa: E402

RESUME = dict(quiet=True, codec="ffv1", resume=True, batch_size=3)


def up2(x: np.ndarray, *_) -> np.ndarray:  # (N, H, W, 3) -> (N, 2H, 2W, 3), stands in for the network
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


class Boom(Exception):
    pass


def failing_after(calls: int):
    n = [0]

    def process(x: np.ndarray, *_) -> np.ndarray:
        n[0] += 1
        if n[0] > calls:
            raise Boom
        return up2(x)
    return process


def content(path: Path) -> tuple[list, list]:
    """Every decoded video frame with its time, and every audio packet's bytes."""
    with av.open(str(path)) as c:
        frames = [(float(f.pts * f.time_base), f.to_ndarray().tobytes()) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = [bytes(p) for p in c.demux(audio=0) if p.size]
    return frames, audio


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return media.make_clip(tmp_path_factory.mktemp("resume") / "in.mp4", seconds=2.4, width=64, height=48)


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> tuple[list, list]:
    out = transcode(clip, tmp_path_factory.mktemp("ref") / "ref.mkv", up2, 2, VideoOptions(**RESUME),
                    segment_frames=10).output
    return content(out)


@pytest.mark.parametrize("calls", [1, 5, 9, 19])
def test_interrupted_run_resumes_to_the_same_output(clip, reference, tmp_path, calls):
    out = tmp_path / "out.mkv"
    with pytest.raises(Boom):
        transcode(clip, out, failing_after(calls), 2, VideoOptions(**RESUME), segment_frames=10)
    work = work_dir_for(out)
    assert not out.exists() and (work / MANIFEST).is_file()
    done = json.loads((work / MANIFEST).read_text())["segments"]
    res = transcode(clip, out, up2, 2, VideoOptions(**RESUME), segment_frames=10)
    assert res.frames == 60 and not work.exists()
    assert any("resuming" in n for n in res.notes) == bool(done)
    assert content(out) == reference


def test_deinterlaced_double_rate_resumes_exactly(tmp_path):
    src = am.make_interlaced(tmp_path / "woven.mkv", frames=24)
    opts = VideoOptions(**RESUME, ingest=IngestOptions(deinterlace="auto", double_rate=True))
    ref = transcode(src, tmp_path / "ref.mkv", up2, 2, opts, segment_frames=9).output
    with pytest.raises(Boom):
        transcode(src, tmp_path / "out.mkv", failing_after(8), 2, opts, segment_frames=9)
    res = transcode(src, tmp_path / "out.mkv", up2, 2, opts, segment_frames=9)
    assert res.frames == 48 and content(res.output) == content(ref)


@pytest.mark.parametrize("filtered", [False, True])
def test_decoder_seeks_to_the_resume_point(tmp_path, filtered):
    """A resumed decode seeks near the segment start and gives exactly the frames a full decode gives."""
    src = am.make_interlaced(tmp_path / "woven.mkv", frames=40, audio=False) if filtered else \
        media.make_clip(tmp_path / "in.mp4", seconds=2, width=64, height=48)
    from vsr.video import ingest
    info = probe(src)
    plan = ingest.resolve(IngestOptions(deinterlace="bwdif", double_rate=True), info, scale=1) if filtered else None
    out_info = plan.apply_to_info(info) if plan else info

    def decode(start=None):
        q: queue.Queue = queue.Queue()
        dec = Decoder(out_info, q, threading.Event(), batch_size=4, max_frames=None, high_bit_depth=False,
                      source=info, ingest=plan, segment_frames=10, start=start)
        dec._decode()
        batches = list(q.queue)
        return dec, [(p, f.tobytes()) for b in batches for p, f in zip(b.pts, b.frames)]

    _, full = decode()
    dec, tail = decode(StartPoint(index=30, after_pts=full[29][0]))
    assert tail == full[30:] and not dec.seek_missed


def test_changed_settings_start_over(clip, tmp_path):
    out = tmp_path / "out.mkv"
    with pytest.raises(Boom):
        transcode(clip, out, failing_after(9), 2, VideoOptions(**RESUME), segment_frames=10)
    res = transcode(clip, out, up2, 2, VideoOptions(**RESUME, keep_sar=True), segment_frames=10)
    assert any("does not match" in n and "video" in n for n in res.notes) and res.frames == 60


def test_damaged_segment_is_redone(clip, reference, tmp_path):
    out = tmp_path / "out.mkv"
    with pytest.raises(Boom):
        transcode(clip, out, failing_after(13), 2, VideoOptions(**RESUME), segment_frames=10)
    work = work_dir_for(out)
    segs = sorted(work.glob("segment_*.mkv"))
    assert len(segs) >= 2
    with open(segs[1], "r+b") as fh:  # as if power went off while the file was being written
        fh.truncate(fh.seek(0, 2) // 2)
    (work / "segment_00009.partial.mkv").write_bytes(b"half a file")
    res = transcode(clip, out, up2, 2, VideoOptions(**RESUME), segment_frames=10)
    assert "10 frames in 1 segments" in " ".join(res.notes)
    assert content(out) == reference


def test_disk_full_is_one_line_and_resumable(clip, reference, tmp_path, monkeypatch):
    out = tmp_path / "out.mkv"
    real_write = encode_mod.SegmentWriter.write
    count = [0]

    def write(self, image, *, pts, duration):
        count[0] += 1
        if count[0] > 25:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, image, pts=pts, duration=duration)

    monkeypatch.setattr(encode_mod.SegmentWriter, "write", write)
    with pytest.raises(VsrError, match="disk full") as exc:
        transcode(clip, out, up2, 2, VideoOptions(**RESUME), segment_frames=10)
    assert "\n" not in str(exc.value) and "resume" in str(exc.value)
    monkeypatch.setattr(encode_mod.SegmentWriter, "write", real_write)
    res = transcode(clip, out, up2, 2, VideoOptions(**RESUME), segment_frames=10)
    assert "20 frames in 2 segments" in " ".join(res.notes) and content(out) == reference


def with_memory():
    """A process that remembers earlier frames (as a recurrent network does) until a reset."""
    state = [None]

    def process(x: np.ndarray, indices, resets) -> np.ndarray:
        out = []
        for f, reset in zip(x.astype(np.float32), resets):
            state[0] = f if reset or state[0] is None else 0.5 * f + 0.5 * state[0]
            out.append(state[0].round().astype(np.uint8))
        return up2(np.stack(out))
    return process


def test_segments_computed_as_parts_join_to_the_one_pass_output(clip, tmp_path):
    """Each segment computed on its own (as the tasks of a cluster job are, in any order and process),
    then joined: the same frames as one segmented run, also for a process with memory (warm-up frames)."""
    kw = dict(segment_frames=10, context_frames=3)
    ref = content(transcode(clip, tmp_path / "ref.mkv", with_memory(), 2, VideoOptions(**RESUME), **kw).output)
    out = tmp_path / "out.mkv"
    starts = segment_starts(clip, 2, VideoOptions(**RESUME), segment_frames=10)
    assert [s.index for s in starts] == [10, 20, 30, 40, 50]
    parts = [Part(0, None)] + [Part(n, s) for n, s in enumerate(starts, 1)]
    for part in reversed(parts):
        assert transcode(clip, out, with_memory(), 2, VideoOptions(**RESUME), part=part, **kw).frames == 10
    assert not out.exists()
    assert transcode(clip, out, failing_after(0), 2, VideoOptions(**RESUME), part=parts[2], **kw).frames == 0
    res = transcode(clip, out, failing_after(0), 2, VideoOptions(**RESUME), **kw)  # adopts all, computes nothing
    assert res.frames == 60 and content(out) == ref and not work_dir_for(out).exists()
    assert any("60 frames came from parts" in n for n in res.notes)
    # a gap: the parts before it are adopted, the rest is computed by the joining run
    out2 = tmp_path / "out2.mkv"
    for part in (parts[0], parts[1], parts[3]):
        transcode(clip, out2, with_memory(), 2, VideoOptions(**RESUME), part=part, **kw)
    res = transcode(clip, out2, with_memory(), 2, VideoOptions(**RESUME), **kw)
    assert any("20 frames came from parts" in n for n in res.notes) and content(out2) == ref


def _cli(src: Path, out: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "vsr", "upscale", str(src), "-o", str(out), "--model", str(model), "--codec",
            "ffv1", "--segment-frames", "8", "--quiet", "--deinterlace", "off", "--backend", "torch"]


def _wait_for_segments(work: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            if len(json.loads((work / MANIFEST).read_text())["segments"]) >= n:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)


def test_sigkill_and_ctrl_c_then_the_same_command_finishes(tmp_path, tiny_weights):
    src = media.make_clip(tmp_path / "in.mp4", seconds=2.4, width=64, height=48)
    ref = tmp_path / "ref.mkv"
    subprocess.run(_cli(src, ref, tiny_weights), check=True)
    out = tmp_path / "out.mkv"
    work = work_dir_for(out)
    proc = subprocess.Popen(_cli(src, out, tiny_weights), stderr=subprocess.PIPE, text=True)
    _wait_for_segments(work, 2, proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    # SIGINT as a terminal's Ctrl-C; a shell may start background jobs with it ignored, so restore it
    proc = subprocess.Popen(_cli(src, out, tiny_weights), stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_segments(work, 4, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:  # interrupted before the end: it says how to go on
        assert proc.returncode == 130 and "run the same command again to resume" in err, err
    r = subprocess.run(_cli(src, out, tiny_weights), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert content(out) == content(ref) and not work.exists()
