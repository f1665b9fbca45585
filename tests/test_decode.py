"""The decoder's phases at a resume point: a seek that lands well gives exactly the frames a full decode
gives; one that cannot prove continuity falls back to counting from the start (the same frames again);
a start point at the input's end or past max_frames hands nothing on; a changed input is refused."""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path

import av
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analog_media as am  # noqa: E402

from vsr.video import IngestOptions, probe  # noqa: E402
from vsr.video import ingest  # noqa: E402
from vsr.video.decode import Decoder, StartPoint  # noqa: E402


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "deinterlaced"])
def source(request, tmp_path_factory):
    """An all-intra clip (every frame a keyframe: a seek lands exactly where it is sent), decoded as is
    or through the deinterlacer at double rate (48 frames)."""
    src = am.make_interlaced(tmp_path_factory.mktemp("decode") / "woven.mkv", frames=24, audio=False)
    info = probe(src)
    plan = ingest.resolve(IngestOptions(deinterlace="bwdif", double_rate=True), info, scale=1) \
        if request.param else None
    return src, info, plan


def decode(source, start=None, *, max_frames=None, context_frames=0):
    _, info, plan = source
    q: queue.Queue = queue.Queue()
    dec = Decoder(plan.apply_to_info(info) if plan else info, q, threading.Event(), batch_size=4,
                  max_frames=max_frames, high_bit_depth=False, source=info, ingest=plan, segment_frames=6,
                  start=start, context_frames=context_frames)
    dec.start()
    dec.thread.join()
    items = list(q.queue)
    assert items[-1] is None, items[-1]
    frames = [(p, i, f.tobytes()) for b in items[:-1] if not b.context for p, i, f in zip(b.pts, b.indices, b.frames)]
    context = [b.indices for b in items[:-1] if b.context]
    return dec, frames, context


def test_a_seek_that_lands_gives_the_full_decodes_frames(source):
    _, full, _ = decode(source)
    dec, tail, _ = decode(source, StartPoint(index=12, after_pts=full[11][0]))
    assert tail == full[12:] and not dec.seek_missed
    assert dec.stats.decoded == len(full) and dec.last_pts == full[-1][0]


def test_warm_up_frames_come_before_a_resumed_segment(source):
    _, full, context = decode(source, context_frames=2)
    dec, tail, resumed = decode(source, StartPoint(index=12, after_pts=full[11][0]), context_frames=2)
    assert tail == full[12:] and not dec.seek_missed
    assert resumed[0] == [10, 11] and resumed == [c for c in context if c[0] >= 10]


def test_a_seek_that_misses_counts_from_the_start(source, monkeypatch):
    """The seek lands past the start point (as in a file whose index lies): continuity cannot be proven, so
    the decoder decodes again from the start, counting, and hands on the same frames."""
    _, full, _ = decode(source)
    true_open = av.open

    class Late:
        def __init__(self, container):
            self.container = container

        def __enter__(self):
            self.container.__enter__()
            return self

        def __exit__(self, *exc):
            return self.container.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self.container, name)

        def seek(self, offset, *, stream, backward):
            self.container.seek(offset + 10**6, stream=stream, backward=backward)  # the last keyframe

    monkeypatch.setattr(av, "open", lambda *a, **kw: Late(true_open(*a, **kw)))
    dec, tail, _ = decode(source, StartPoint(index=12, after_pts=full[11][0]))
    assert dec.seek_missed and tail == full[12:]
    assert dec.stats.decoded == len(full)


def test_a_start_point_at_the_end_hands_nothing_on(source):
    _, full, _ = decode(source)
    dec, tail, _ = decode(source, StartPoint(index=len(full), after_pts=full[-1][0]))
    assert tail == [] and not dec.seek_missed and dec.stats.decoded == len(full)


def test_max_frames_counts_from_the_start_point(source):
    _, full, _ = decode(source)
    start = StartPoint(index=12, after_pts=full[11][0])
    assert decode(source, start, max_frames=15)[1] == full[12:15]
    assert decode(source, start, max_frames=12)[1] == []


def test_a_changed_input_is_refused(source):
    """The start point's frame has another timestamp: a seek misses it, and counting finds the mismatch."""
    _, full, _ = decode(source)
    _, info, plan = source
    q: queue.Queue = queue.Queue()
    dec = Decoder(plan.apply_to_info(info) if plan else info, q, threading.Event(), batch_size=4, max_frames=None,
                  high_bit_depth=False, source=info, ingest=plan, start=StartPoint(index=12, after_pts=full[11][0] + 1))
    dec.start()
    dec.thread.join()
    failure = list(q.queue)[-1]
    assert isinstance(failure, RuntimeError) and "resume point mismatch" in str(failure)
    assert dec.seek_missed
