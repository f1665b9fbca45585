"""The video layer: streams copied untouched, timestamps kept, geometry and colour right, safe outputs."""

from __future__ import annotations

import os
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402

from vsr.errors import VsrError  # noqa: E402
from vsr.video import VideoOptions, probe, transcode  # noqa: E402

FAST = dict(quiet=True, preset="ultrafast")  # libx264 speed for tests; defaults are archival


def up(k: int):
    """Nearest-neighbour upscale: a stand-in for the network."""
    def process(x: np.ndarray, *_) -> np.ndarray:  # (N, H, W, 3) -> (N, kH, kW, 3)
        return np.repeat(np.repeat(x, k, axis=1), k, axis=2)
    return process


def identity(x: np.ndarray, *_) -> np.ndarray:
    return x


def packets(path: Path, index: int) -> list[tuple[bytes, int | None]]:
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts) for p in c.demux(c.streams[index]) if p.size]


def frame_times(path: Path) -> list[float]:
    """Presentation times (s) of every decoded video frame."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [float(f.pts * s.time_base) for f in c.decode(s)]


def streams(path: Path) -> list[dict]:
    """Plain facts about each stream (PyAV stream objects must not outlive their container)."""
    with av.open(str(path)) as c:
        return [dict(index=s.index, type=s.type, metadata=dict(s.metadata), disposition=int(s.disposition),
                     codec=s.codec_context.name if s.codec_context else None,
                     start=float(s.start_time * s.time_base) if s.start_time is not None else None)
                for s in c.streams]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def rich(tmp_path_factory) -> Path:
    return media.make_rich_clip(tmp_path_factory.mktemp("rich") / "rich.mkv")


@pytest.fixture(scope="module")
def rich_out(rich: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("rich_out") / "restored.mp4"
    return transcode(rich, out, up(2), 2, VideoOptions(**FAST))


def test_every_stream_copied_untouched(rich: Path, rich_out) -> None:
    out = rich_out.output
    assert out.suffix == ".mkv" and out.exists()  # MP4 cannot hold PCM, ASS and fonts
    assert any("instead of .mp4" in n for n in rich_out.notes)
    src_s, out_s = streams(rich), streams(out)
    assert [s["type"] for s in out_s] == [s["type"] for s in src_s]
    for a, b in zip(src_s[1:], out_s[1:]):
        if a["type"] == "attachment":
            with av.open(str(rich)) as ca, av.open(str(out)) as cb:
                assert bytes(cb.streams[b["index"]].data) == bytes(ca.streams[a["index"]].data) == media.FONT_BYTES
                assert cb.streams[b["index"]].mimetype == "application/x-truetype-font"
            continue
        assert b["codec"] == a["codec"]
        assert packets(out, b["index"]) == packets(rich, a["index"]), f"stream {a['index']} changed"
        assert b["disposition"] == a["disposition"]
        for key in ("language", "title"):
            assert b["metadata"].get(key) == a["metadata"].get(key)
    assert out_s[2]["metadata"]["title"] == "Commentary" and out_s[2]["disposition"] & av.stream.Disposition.comment
    assert out_s[0]["metadata"].get("title") == "Main picture"
    with av.open(str(rich)) as ca, av.open(str(out)) as cb:
        assert [c["metadata"]["title"] for c in cb.chapters()] == ["Opening", "Ending"]
        assert [(c["start"], c["end"]) for c in cb.chapters()] == [(c["start"], c["end"]) for c in ca.chapters()]
        assert cb.metadata.get("title") == "Generated test clip"


def test_timestamps_and_audio_offset_kept(rich: Path, rich_out) -> None:
    src_t, out_t = frame_times(rich), frame_times(rich_out.output)
    assert out_t == src_t  # variable frame rate stays variable, late video start kept
    assert len(out_t) == rich_out.frames == 20 - len(media.DROPPED)
    assert rich_out.decode_errors == 0
    src_s, out_s = streams(rich), streams(rich_out.output)
    starts = lambda ss: [s["start"] for s in ss if s["type"] in ("video", "audio")]  # noqa: E731
    assert starts(out_s) == starts(src_s) and starts(src_s)[0] > starts(src_s)[1]
    with av.open(str(rich)) as ca, av.open(str(rich_out.output)) as cb:
        assert abs(cb.duration - ca.duration) <= 40_000  # within one frame (us)


def test_anamorphic_becomes_square_pixels_with_colour_tags(rich_out) -> None:
    with av.open(str(rich_out.output)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        # 65x49 at SAR 4/3, x2 -> 130x98 stored = 173.3x98 displayed -> 174x98 square pixels
        assert (cc.width, cc.height) == (174, 98)
        assert s.sample_aspect_ratio in (None, Fraction(1))
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (6, 6, 6, 1)  # BT.601 tv
        frame = next(c.decode(s))
        assert (frame.colorspace, frame.color_range) == (6, 1)


def test_keep_sar_and_odd_size_padding(rich: Path, tmp_path: Path) -> None:
    res = transcode(rich, tmp_path / "sar.mkv", identity, 1, VideoOptions(keep_sar=True, **FAST))
    with av.open(str(res.output)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (66, 50)  # 65x49 edge-padded for 4:2:0
        assert s.sample_aspect_ratio == Fraction(4, 3)
    assert any("padded to 66x50" in n for n in res.notes)


def test_segments_equal_unsegmented(rich: Path, rich_out, tmp_path: Path) -> None:
    res = transcode(rich, tmp_path / "seg.mkv", up(2), 2, VideoOptions(**FAST), segment_frames=5)
    assert res.frames == rich_out.frames
    assert frame_times(res.output) == frame_times(rich_out.output)
    with av.open(str(res.output)) as c:
        keys = [f.key_frame for f in c.decode(video=0)]
    assert all(keys[i] for i in range(0, len(keys), 5))  # each segment starts with an IDR frame
    assert packets(res.output, 1) == packets(rich, 1)


def test_mp4_stays_mp4_with_exact_timestamps(tmp_path: Path) -> None:
    src = media.make_mp4(tmp_path / "in.mp4", rate=30, frames=16)
    for seg in (None, 4):
        res = transcode(src, tmp_path / f"out{seg}.mp4", up(2), 2, VideoOptions(**FAST), segment_frames=seg)
        assert res.output == tmp_path / f"out{seg}.mp4" and not res.notes
        assert frame_times(res.output) == pytest.approx(frame_times(src), abs=1e-9)
        assert packets(res.output, 1) == packets(src, 1)  # AAC copied bit for bit
        with av.open(str(res.output)) as c:
            assert (c.streams.video[0].width, c.streams.video[0].height) == (128, 96)


def test_late_start_moves_to_zero_keeping_offsets(tmp_path: Path) -> None:
    src = media.make_ts(tmp_path / "cap.ts")
    s_in = {s["type"]: s["start"] for s in streams(src)}
    assert s_in["video"] > 1  # MPEG-TS starts late
    res = transcode(src, tmp_path / "cap.mp4", up(2), 2, VideoOptions(**FAST), segment_frames=6)
    s_out = {s["type"]: s["start"] for s in streams(res.output)}
    assert min(s_out.values()) == 0
    assert s_out["video"] - s_out["audio"] == pytest.approx(s_in["video"] - s_in["audio"], abs=1e-4)
    shift = min(s_in.values())
    assert frame_times(res.output) == pytest.approx([t - shift for t in frame_times(src)], abs=1e-4)
    assert [b for b, _ in packets(res.output, 1)] == [b for b, _ in packets(src, 1)]  # MP2 copied


def test_ten_bit_stays_ten_bit(tmp_path: Path) -> None:
    src = media.make_rich_clip(tmp_path / "ten.mkv", width=32, height=24, frames=6, sar="1",
                               pix_fmt="yuv420p10le")
    seen = []

    def process(x: np.ndarray, *_) -> np.ndarray:
        seen.append(x.dtype)
        return up(2)(x)

    res = transcode(src, tmp_path / "ten_out.mkv", process, 2, VideoOptions(**FAST))
    assert set(seen) == {np.dtype(np.uint16)}
    with av.open(str(res.output)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"


def test_colour_round_trip_uses_the_input_matrix(tmp_path: Path) -> None:
    """BT.601 4:4:4 in, lossless FFV1 4:4:4 out at scale 1: the pixels must come back (rounding only).
    Converting with BT.709 on either side would shift saturated colours by tens of levels."""
    src = media.make_rich_clip(tmp_path / "col.mkv", width=64, height=48, frames=4, sar="1", pix_fmt="yuv444p")
    res = transcode(src, tmp_path / "col_out.mkv", identity, 1,
                    VideoOptions(codec="ffv1", pix_fmt="yuv444p", quiet=True))

    def yuv(path: Path) -> np.ndarray:
        with av.open(str(path)) as c:
            assert c.streams.video[0].codec_context.colorspace == 6
            return np.stack([f.to_ndarray().astype(int) for f in c.decode(video=0)])

    assert np.abs(yuv(res.output) - yuv(src)).max() <= 2
    # the same round trip with a BT.601/BT.709 mix-up is far off: the check above can tell
    with av.open(str(src)) as c:
        f = next(c.decode(video=0))
        wrong = f.reformat(format="rgb24", src_colorspace="itu709", src_color_range="MPEG")
        back = wrong.reformat(format="yuv444p", dst_colorspace="itu601", dst_color_range="MPEG")
        assert np.abs(back.to_ndarray().astype(int) - f.to_ndarray().astype(int)).max() > 10


@pytest.mark.parametrize("codec", ["libx265", "libsvtav1", "ffv1", "prores_ks"])
def test_other_codecs(codec: str, tmp_path: Path) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this PyAV build")
    src = media.make_mp4(tmp_path / "c.mp4", width=64, height=64, frames=4)
    opts = {"libx265": {"preset": "ultrafast"}, "libsvtav1": {"preset": "12"}}.get(codec, {})
    res = transcode(src, tmp_path / "c_out.mp4", up(2), 2, VideoOptions(codec=codec, quiet=True, **opts))
    assert len(frame_times(res.output)) == 4
    assert res.output.suffix == (".mp4" if codec in ("libx265", "libsvtav1") else ".mkv")


def test_progress_and_max_frames(rich: Path, tmp_path: Path) -> None:
    calls = []
    res = transcode(rich, tmp_path / "short.mkv", up(2), 2,
                    VideoOptions(max_frames=6, batch_size=4, progress=lambda d, t: calls.append((d, t)), **FAST))
    assert res.frames == 6 and calls[-1] == (6, 6)
    assert res.model_seconds >= 0 and res.wall_seconds > res.model_seconds
    times = frame_times(res.output)
    with av.open(str(res.output)) as c:  # other streams are cut where the video ends
        audio = c.streams.audio[1]
        end = max(float((p.pts + p.duration) * audio.time_base) for p in c.demux(audio) if p.size)
    assert end <= times[-1] + 0.1


def test_probe_reads_geometry_colour_and_streams(rich: Path) -> None:
    info = probe(rich)
    assert (info.width, info.height, info.sar, info.display_width) == (65, 49, Fraction(4, 3), 87)
    assert (info.colour.matrix, info.colour.range, info.bit_depth) == (6, 1, 8)
    assert [s.type for s in info.streams] == ["video", "audio", "audio", "subtitle", "attachment"]


def test_fractional_scale(tmp_path: Path) -> None:
    src = media.make_mp4(tmp_path / "f.mp4", frames=5)

    def to_1_5(x: np.ndarray, *_) -> np.ndarray:  # 64x48 -> 96x72 (nearest neighbour on an index grid)
        ys, xs = (np.arange(72) / 1.5).astype(int), (np.arange(96) / 1.5).astype(int)
        return x[:, ys][:, :, xs]

    res = transcode(src, tmp_path / "f_out.mp4", to_1_5, 1.5, VideoOptions(**FAST))
    with av.open(str(res.output)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (96, 72)
    assert res.frames == 5


# --- bad input and output safety ------------------------------------------------------------------------

def _bad_inputs(folder: Path) -> dict[str, Path]:
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    text = folder / "notes.mp4"
    text.write_text("this is a shopping list, not a video\n" * 20)
    return {"empty": empty, "text": text, "audio": media.make_audio_only(folder / "song.m4a"),
            "truncated": media.make_truncated_mp4(folder / "cut.mp4")}


@pytest.mark.parametrize("kind", ["empty", "text", "audio", "truncated"])
def test_bad_input_is_one_line_error_and_no_output(kind: str, tmp_path: Path) -> None:
    src = _bad_inputs(tmp_path)[kind]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(VsrError) as e1:
        probe(src)
    with pytest.raises(VsrError) as e2:
        transcode(src, out_dir / "x.mkv", identity, 1, VideoOptions(quiet=True))
    for e in (e1, e2):
        assert "\n" not in str(e.value) and str(src) in str(e.value)
    assert list(out_dir.iterdir()) == []
    if kind == "truncated":
        assert "truncated" in str(e1.value)


def test_failure_leaves_nothing(rich: Path, tmp_path: Path) -> None:
    def broken(x: np.ndarray, *_) -> np.ndarray:
        raise RuntimeError("network exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        transcode(rich, tmp_path / "never.mkv", broken, 2, VideoOptions(quiet=True))
    with pytest.raises(ValueError, match="expected about"):
        transcode(rich, tmp_path / "never.mkv", up(3), 2, VideoOptions(quiet=True))
    assert list(p for p in tmp_path.iterdir() if p.name != "rich.mkv") == []


def test_interrupt_leaves_nothing(rich: Path, tmp_path: Path) -> None:
    calls = []

    def interrupted(x: np.ndarray, *_) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the network runs
        return up(2)(x)

    out_dir = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        transcode(rich, out_dir / "x.mkv", interrupted, 2, VideoOptions(batch_size=2, quiet=True))
    assert list(out_dir.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("vsr-")]  # background threads ended


def test_never_writes_the_input(rich: Path) -> None:
    before = rich.stat().st_mtime_ns
    with pytest.raises(VsrError, match="overwrite the input"):
        transcode(rich, rich, identity, 1, VideoOptions(quiet=True))
    assert rich.stat().st_mtime_ns == before and leftovers(rich.parent) == []


# --- real footage -----------------------------------------------------------------------------------

def _data() -> Path:
    root = Path(os.environ.get("VSR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    return root / "video"


def _real(name: str) -> Path:
    path = _data() / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def test_vtest_msmpeg4(tmp_path: Path) -> None:
    src = _real("vtest.avi")
    info = probe(src)
    assert (info.codec, info.width, info.height, info.frames) == ("msmpeg4", 768, 576, 795)
    res = transcode(src, tmp_path / "vtest.avi", identity, 1, VideoOptions(max_frames=30, **FAST))
    assert res.output.suffix == ".mkv" and res.frames == 30 and res.decode_errors == 0
    assert frame_times(res.output) == pytest.approx([i / 10 for i in range(30)])


def test_tree_damaged_cinepak_completes(tmp_path: Path) -> None:
    src = _real("tree.avi")
    info = probe(src)
    res = transcode(src, tmp_path / "tree.mkv", identity, 1, VideoOptions(**FAST))
    assert res.decode_errors > 0 and any("did not decode" in n for n in res.notes)
    assert frame_times(res.output) == pytest.approx(frame_times(src), abs=1e-3)
    with av.open(str(res.output)) as c:
        assert abs(c.duration / 1e6 - info.duration) <= 1 / 15  # within one frame


def test_mp4_text_subtitles_become_subrip_in_mkv(tmp_path: Path) -> None:
    from vsr.video.ffmpeg import run_ffmpeg

    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,100 --> 00:00:00,600\nHello tape\n\n2\n00:00:00,700 --> 00:00:00,900\nBye\n")
    src = tmp_path / "in.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", media.video_filter(width=64, height=48, frames=10, rate=10,
                                                          pix_fmt="yuv420p"),
                "-i", str(srt), "-c:v", "libx264", "-preset", "ultrafast", "-c:s", "mov_text",
                "-metadata:s:s", "language=fre", str(src)], what="making an mp4 with text subtitles")
    res = transcode(src, tmp_path / "out.mkv", identity, 1, VideoOptions(**FAST))
    subs = [s for s in streams(res.output) if s["type"] == "subtitle"]
    assert len(subs) == 1 and subs[0]["codec"] in ("subrip", "srt") and subs[0]["metadata"]["language"] == "fre"
    texts = []
    for path in (src, res.output):
        run_ffmpeg(["-i", str(path), "-map", "0:s:0", str(tmp_path / f"{path.stem}.srt")], what="reading subs")
        texts.append((tmp_path / f"{path.stem}.srt").read_text())
    assert texts[0] == texts[1] and "Hello tape" in texts[1]


@pytest.mark.parametrize("pix_fmt,codec,expect", [("yuv444p", "libx264", "yuv444p"), ("yuv422p", "libx264", "yuv422p"),
                                                  ("yuv420p", "libx264", "yuv420p"), ("yuv444p", "ffv1", "yuv444p")])
def test_chroma_sampling_of_the_input_is_kept(tmp_path, pix_fmt, codec, expect):
    src = tmp_path / f"in-{pix_fmt}.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(src), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 24, pix_fmt
        for _ in range(3):
            img = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    fast = FAST if codec == "libx264" else dict(quiet=True)  # ffv1 has no presets
    res = transcode(src, tmp_path / "out.mkv", up(2), 2, VideoOptions(codec=codec, **fast))
    with av.open(str(res.output)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == expect
    assert not any("chroma" in n for n in res.notes)


def test_chroma_an_encoder_cannot_keep_is_said(tmp_path):
    from vsr.video.options import resolve_encoder

    enc = resolve_encoder(VideoOptions(codec="libsvtav1"), high_bit_input=False, input_pix_fmt="yuv444p")
    assert enc.pix_fmt == "yuv420p" and "cannot keep the input's 4:4:4 chroma" in enc.notes[0]
    assert resolve_encoder(VideoOptions(pix_fmt="yuv420p"), high_bit_input=False, input_pix_fmt="yuv444p").pix_fmt == "yuv420p"
