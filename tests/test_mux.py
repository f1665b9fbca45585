"""Muxing the new video with the input's other streams, on real small files: covers, the MP4 index and
time scale, the cut at the video's end, the pixel aspect, and what comes from the input when no stream does."""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import pytest

from vsr.video.ffmpeg import run_ffmpeg
from vsr.video.mux import mux, plan_mux
from vsr.video.probe import probe

import media


def new_video(path: Path, *, width: int = 32, height: int = 24, frames: int = 5, codec: str = "libx264",
              start: float = 0) -> Path:
    """What the pipeline hands the muxer: the upscaled picture alone, with the input video's timestamps."""
    vf = media.video_filter(width=width, height=height, frames=frames, pix_fmt="yuv420p")
    run_ffmpeg(["-f", "lavfi", "-i", vf, "-c:v", codec, *(["-preset", "ultrafast"] if codec == "libx264" else []),
                *(["-output_ts_offset", f"{start}"] if start else []), str(path)], what="making the new video")
    return path


def with_cover(path: Path) -> Path:
    """An MP4 with H.264, AAC and a PNG cover picture (attached_pic), as music videos and podcasts have."""
    tmp = path.parent
    cover = tmp / "front.png"
    run_ffmpeg(["-f", "lavfi", "-i", "color=red:size=16x16", "-frames:v", "1", str(cover)], what="making a cover")
    plain = media.make_mp4(tmp / "plain.mp4", frames=5)
    run_ffmpeg(["-i", str(plain), "-i", str(cover), "-map", "0", "-map", "1", "-c", "copy", "-c:v:1", "png",
                "-disposition:v:1", "attached_pic", "-metadata:s:v:0", "language=ger",
                "-metadata:s:v:0", "handler_name=Camera", str(path)], what="adding a cover")
    return path


def mvhd_timescale(path: Path) -> int:
    data = path.read_bytes()
    at = data.index(b"mvhd") + 4
    version = data[at]
    return struct.unpack(">I", data[at + (20 if version else 12):][:4])[0]


def facts(path: Path) -> list[tuple]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else None, int(s.disposition),
                 dict(s.metadata).get("language")) for s in c.streams]


@pytest.fixture(scope="module")
def covered(tmp_path_factory) -> Path:
    return with_cover(tmp_path_factory.mktemp("cover") / "song.mp4")


def test_a_cover_goes_into_mkv_as_an_attachment(covered, tmp_path):
    info = probe(covered)
    plan = plan_mux(tmp_path / "out.mkv", info, video_codec="h264")
    assert [s.is_cover for s in plan.keep] == [False, True]
    out = tmp_path / "out.mkv"
    mux(video=new_video(tmp_path / "v.mkv"), info=info, plan=plan, out=out, size=(32, 24))
    with av.open(str(covered)) as c:
        cover = next(bytes(p) for p in c.demux(c.streams[2]) if p.size)
    with av.open(str(out)) as c:  # Matroska's image attachments read back as an attached picture
        assert [(s.type, s.codec_context.name) for s in c.streams] == [("video", "h264"), ("audio", "aac"),
                                                                       ("video", "png")]
        att = c.streams[2]
        assert att.disposition & av.stream.Disposition.attached_pic
        assert dict(att.metadata) == {"filename": "cover.png", "mimetype": "image/png"}
        assert [bytes(p) for p in c.demux(att) if p.size] == [cover]
        video = dict(c.streams[0].metadata)
        assert video.get("language") == "ger" and video.get("HANDLER_NAME") == "Camera"
    assert (tmp_path / "cover-2.png").read_bytes() == cover


def test_a_cover_stays_a_cover_in_mp4(covered, tmp_path):
    info = probe(covered)
    out = tmp_path / "out.mp4"
    mux(video=new_video(tmp_path / "v.mp4"), info=info, plan=plan_mux(out, info, video_codec="h264"), out=out,
        size=(32, 24))
    src, got = facts(covered), facts(out)
    assert [f[:3] for f in got[1:]] == [f[:3] for f in src[1:]]
    assert got[2][2] & av.stream.Disposition.attached_pic
    assert got[0][3] == "ger"


@pytest.mark.parametrize("time_scale, name", [(None, "out.mp4"), (12800, "out.m4v")])
def test_mp4_index_comes_first_in_the_videos_time_scale(tmp_path, time_scale, name):
    src = media.make_mp4(tmp_path / "in.mp4", frames=5)
    info = probe(src)
    out = tmp_path / name
    mux(video=new_video(tmp_path / "v.mp4"), info=info, plan=plan_mux(out, info, video_codec="h264"), out=out,
        size=(32, 24), time_scale=time_scale)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # playable while still downloading
    if time_scale:  # without one, the movie's time scale is the muxer's default (1000 in ffmpeg 5.1, not in 9)
        assert mvhd_timescale(out) == time_scale
    assert data[8:12] == b"isom"  # written by the mp4 muxer, whatever the suffix (.m4v would pick "ipod")
    assert [f[0] for f in facts(out)] == ["video", "audio"]


def test_mov_output_too(tmp_path):
    src = media.make_mp4(tmp_path / "in.mp4", frames=5)
    info = probe(src)
    out = tmp_path / "out.mov"
    mux(video=new_video(tmp_path / "v.mov"), info=info, plan=plan_mux(out, info, video_codec="h264"), out=out,
        size=(32, 24), time_scale=600)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat") and mvhd_timescale(out) == 600
    with av.open(str(out)) as c:
        assert c.format.name.startswith("mov") and [s.type for s in c.streams] == ["video", "audio"]


def test_every_stream_is_cut_where_the_video_ends(tmp_path):
    src = media.make_mp4(tmp_path / "in.mp4", frames=25)  # one second of picture and sound
    info = probe(src)
    out = tmp_path / "out.mkv"
    mux(video=new_video(tmp_path / "v.mkv", frames=10), info=info, plan=plan_mux(out, info, video_codec="h264"),
        out=out, size=(32, 24), end_time=0.4)
    with av.open(str(out)) as c:
        audio = [float(p.pts * p.time_base) for p in c.demux(c.streams.audio[0]) if p.size]
    assert audio and max(audio) < 0.5 and min(audio) < 0.05  # the input's sound runs to 1 s


def test_pixel_aspect_and_the_inputs_flags(tmp_path):
    src = media.make_rich_clip(tmp_path / "rich.mkv", frames=5)
    info = probe(src)
    out = tmp_path / "out.mkv"
    mux(video=new_video(tmp_path / "v.mkv", codec="ffv1"), info=info, plan=plan_mux(out, info, video_codec="ffv1"),
        out=out, size=(32, 24), sar=Fraction(4, 3))
    with av.open(str(out)) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(4, 3)
    src_f, out_f = facts(src), facts(out)
    assert [(t, d, lang) for t, _, d, lang in out_f[1:]] == [(t, d, lang) for t, _, d, lang in src_f[1:]]
    assert out_f[0][2] == src_f[0][2]  # no default flag invented for the new video


def test_without_other_streams_the_input_still_gives_title_and_chapters(tmp_path):
    chapters = tmp_path / "ch.ffmeta"
    chapters.write_text(media.CHAPTERS)
    src = tmp_path / "silent.mkv"
    run_ffmpeg(["-f", "lavfi", "-i", media.video_filter(width=32, height=24, frames=10, pix_fmt="yuv420p"),
                "-i", str(chapters), "-map", "0:v", "-map_metadata", "1", "-map_chapters", "1", "-c:v", "ffv1",
                str(src)], what="making a silent clip")
    info = probe(src)
    out = tmp_path / "out.mkv"
    plan = plan_mux(out, info, video_codec="ffv1")
    assert plan.keep == []
    mux(video=new_video(tmp_path / "v.mkv", codec="ffv1"), info=info, plan=plan, out=out, size=(32, 24))
    with av.open(str(out)) as c:
        assert c.metadata.get("title") == "Generated test clip"
        assert [ch["metadata"]["title"] for ch in c.chapters()] == ["Opening", "Ending"]
        assert [s.type for s in c.streams] == ["video"]


@pytest.mark.parametrize("name, mime, codec", [("Folder.jpeg", "image/jpeg", "mjpeg"),
                                              ("scan.tif", "image/tiff", "tiff")])
def test_a_named_cover_keeps_its_name_and_type(tmp_path, name, mime, codec):
    """A Matroska input's cover (an attachment that reads back as a picture) keeps its file name and type,
    also where its type is not one the muxer knows a name for (TIFF)."""
    pic = tmp_path / name
    run_ffmpeg(["-f", "lavfi", "-i", "color=blue:size=16x16", "-frames:v", "1", str(pic)], what="making a cover")
    src = tmp_path / "album.mkv"
    run_ffmpeg(["-f", "lavfi", "-i", media.video_filter(width=32, height=24, frames=5, pix_fmt="yuv420p"),
                "-c:v", "ffv1", "-attach", str(pic), "-metadata:s:t", f"mimetype={mime}", str(src)],
               what="making a clip with a cover")
    info = probe(src)
    out = tmp_path / "out.mkv"
    plan = plan_mux(out, info, video_codec="ffv1")
    assert [(s.codec, s.is_cover) for s in plan.keep] == [(codec, True)]
    mux(video=new_video(tmp_path / "v.mkv", codec="ffv1"), info=info, plan=plan, out=out, size=(32, 24))
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "video"]
        assert dict(c.streams[1].metadata) == {"filename": name, "mimetype": mime}
        assert [bytes(p) for p in c.demux(c.streams[1]) if p.size] == [pic.read_bytes()]
    assert (tmp_path / f"cover-1{pic.suffix}").read_bytes() == pic.read_bytes()


def test_a_late_start_moves_to_zero(tmp_path):
    """A transport stream starting at 0.5 s (not the usual 1.4): every stream moves to start at 0."""
    src = tmp_path / "late.ts"
    vf = media.video_filter(width=32, height=24, frames=10, pix_fmt="yuv420p")
    run_ffmpeg(["-f", "lavfi", "-i", vf, "-f", "lavfi", "-i", "sine=frequency=440:duration=0.4", "-c:v", "libx264",
                "-preset", "ultrafast", "-c:a", "mp2", "-muxdelay", "0", "-muxpreload", "0",
                "-output_ts_offset", "0.5", str(src)], what="making a late start")
    info = probe(src)
    assert 0.4 < info.start_time < 1
    with av.open(str(src)) as c:
        before = {s.type: float(s.start_time * s.time_base) for s in c.streams}
    out = tmp_path / "out.mkv"
    mux(video=new_video(tmp_path / "v.mkv", frames=10, codec="ffv1", start=before["video"]), info=info,
        plan=plan_mux(out, info, video_codec="ffv1"), out=out, size=(32, 24))
    with av.open(str(out)) as c:
        after = {s.type: float(s.start_time * s.time_base) for s in c.streams}
    assert min(after.values()) == 0  # the earliest stream starts at 0, the others keep their offsets
    assert abs((after["video"] - after["audio"]) - (before["video"] - before["audio"])) <= 0.002


def test_a_failed_write_says_what_it_was_writing(tmp_path):
    src = media.make_mp4(tmp_path / "in.mp4", frames=3)
    info = probe(src)
    out = tmp_path / "missing" / "out.mkv"
    with pytest.raises(RuntimeError) as e:
        mux(video=new_video(tmp_path / "v.mkv"), info=info, plan=plan_mux(out, info, video_codec="h264"), out=out,
            size=(32, 24))
    assert str(e.value).startswith(f"{src}: ffmpeg failed while joining the new video and the copied streams into "
                                   "out.mkv (")
    assert "\n" not in str(e.value) and "tries another" in str(e.value)


def test_a_negative_start_moves_every_stream_together(tmp_path):
    """An edited camera file whose streams start at -0.2 s: the new video starts at 0 and the input's other
    streams move by the same 0.2 s, so picture and sound stay in step; the cut (in input time) moves too."""
    src = tmp_path / "edited.mkv"
    vf = media.video_filter(width=32, height=24, frames=10, pix_fmt="yuv420p")
    run_ffmpeg(["-f", "lavfi", "-i", vf, "-f", "lavfi", "-i", "sine=frequency=440:duration=0.4", "-c:v", "ffv1",
                "-c:a", "flac", "-output_ts_offset", "-0.2", "-avoid_negative_ts", "disabled", str(src)],
               what="making a negative start")
    info = probe(src)
    assert info.start_time < -0.19 and info.start_shift > 0
    out = tmp_path / "out.mkv"
    mux(video=new_video(tmp_path / "v.mkv", frames=10, codec="ffv1"), info=info,
        plan=plan_mux(out, info, video_codec="ffv1"), out=out, size=(32, 24), end_time=0.0)
    with av.open(str(out)) as c:
        starts = [float(s.start_time * s.time_base) for s in c.streams]
        audio = [float(p.pts * p.time_base) for p in c.demux(c.streams.audio[0]) if p.size]
    assert starts[0] == 0 and abs(starts[1]) <= 0.005  # milliseconds; ffmpeg 5.1 and 9 round the audio 2 ms apart
    assert 0.05 < max(audio) < 0.2  # cut where the video ends: 0 s of input time, 0.2 s into the output  # cut where the video ends, 0.2 s of input time after its start
