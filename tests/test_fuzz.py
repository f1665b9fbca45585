"""Bad input, generated and mutated: every case ends in a usable output or one clean VsrError, never a
traceback, a hang or a file at the final path after a failure. Seeded, a bounded number of cases."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analog_media as am  # noqa: E402
import media  # noqa: E402

from vsr.errors import VsrError  # noqa: E402
from vsr.video import IngestOptions, VideoOptions, transcode  # noqa: E402

SEED = 1234
CASES_PER_KIND = 8


def up2(x: np.ndarray, *_) -> np.ndarray:
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz-src")
    mp4 = media.make_mp4(d / "a.mp4", frames=15)
    mkv = am.make_interlaced(d / "b.mkv", width=64, height=48, frames=10)
    return {".mp4": mp4.read_bytes(), ".mkv": mkv.read_bytes()}


def mutations(originals: dict[str, bytes]):
    rng = random.Random(SEED)
    for suffix, data in originals.items():
        for i in range(CASES_PER_KIND):
            yield f"truncated{i}{suffix}", data[: rng.randrange(1, len(data))]
        for i in range(CASES_PER_KIND):
            b = bytearray(data)
            start = rng.randrange(len(b) // 20, len(b))
            for _ in range(rng.randrange(1, 64)):  # bursts of garbage, as on a failing disk
                pos = rng.randrange(start, len(b))
                b[pos: pos + 8] = rng.randbytes(min(8, len(b) - pos))
            yield f"garbled{i}{suffix}", bytes(b)


def expect_clean(src: Path, out: Path, *, resume: bool = False) -> str:
    opts = VideoOptions(quiet=True, codec="ffv1", resume=resume, ingest=IngestOptions(deinterlace="auto"))
    try:
        res = transcode(src, out, up2, 2, opts)
    except VsrError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg
        assert not out.exists()
        return "error"
    assert res.output.exists() and res.frames > 0
    return "ok"


def test_mutated_files_end_cleanly(originals, tmp_path):
    outcomes = {}
    for i, (name, data) in enumerate(mutations(originals)):
        src = tmp_path / name
        src.write_bytes(data)
        outcomes[name] = expect_clean(src, tmp_path / f"out{i}.mkv", resume=i % 2 == 0)
    assert len(outcomes) == 4 * CASES_PER_KIND
    assert "ok" in outcomes.values()  # damage in the middle is survivable


def _y4m(path: Path, header: str, payload: bytes) -> Path:
    path.write_bytes(f"YUV4MPEG2 {header}\n".encode() + b"FRAME\n" + payload)
    return path


def test_absurd_headers_and_empty_streams_end_cleanly(tmp_path):
    cases = [
        _y4m(tmp_path / "huge.y4m", "W99999 H99999 F25:1 Ip A1:1 C420jpeg", bytes(1000)),
        _y4m(tmp_path / "zero.y4m", "W0 H0 F25:1 Ip A1:1 C420jpeg", bytes(100)),
        _y4m(tmp_path / "norate.y4m", "W16 H16 F0:0 Ip A0:0 C420jpeg", bytes(16 * 16 * 3 // 2)),
    ]
    mkv = am.make_interlaced(tmp_path / "dims.mkv", width=64, height=48, frames=4, audio=False)
    data = bytearray(mkv.read_bytes())
    for element in (b"\xb0\x81\x40", b"\xba\x81\x30"):  # Matroska PixelWidth 64, PixelHeight 48
        pos = data.find(element)
        if pos >= 0:
            data[pos + 2] = 0xFF
    (tmp_path / "dims2.mkv").write_bytes(bytes(data))
    cases.append(tmp_path / "dims2.mkv")
    no_frames = tmp_path / "noframes.mkv"
    with av.open(str(no_frames), "w") as c:  # a video track that holds no frame at all
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for p in s.encode(None):
            c.mux(p)
    cases.append(no_frames)
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    cases.append(empty)
    outcomes = {p.name: expect_clean(p, tmp_path / f"out_{p.stem}.mkv") for p in cases}
    assert outcomes["empty.mkv"] == "error" and outcomes["noframes.mkv"] == "error"
