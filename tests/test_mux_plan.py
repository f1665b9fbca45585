"""Choosing the output container: every stream the user had goes with the new video, in a container that
holds it; the user's named container is never switched silently."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import pytest

from vsr.errors import VsrError
from vsr.video.mux import CONTAINERS, _disposition_arg, _holds, plan_mux
from vsr.video.probe import StreamInfo, probe

import media


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    """A real small MP4 (H.264 + AAC) as probed; its streams replaced per test."""
    return probe(media.make_mp4(tmp_path_factory.mktemp("mux") / "clip.mp4", frames=3))


def with_streams(info, *others: tuple[str, str]):
    video = next(s for s in info.streams if s.index == info.video_index)
    streams = [video] + [StreamInfo(index=i + 1, type=t, codec=c) for i, (t, c) in enumerate(others)]
    return dataclasses.replace(info, streams=tuple(streams), video_index=video.index)


def test_every_stream_but_data_is_kept_in_order(info):
    src = with_streams(info, ("audio", "aac"), ("data", "bin_data"), ("subtitle", "ass"), ("video", "png"),
                       ("attachment", "ttf"), ("audio", "pcm_s16le"))
    plan = plan_mux(Path("/o/out.mkv"), src, video_codec="h264")
    assert [s.index for s in plan.keep] == [1, 3, 4, 5, 6]
    assert plan.notes == ["stream 2 (data) not copied: data streams (timecode, telemetry) are not carried over"]
    assert plan.path == Path("/o/out.mkv") and plan.container == "mkv" and not plan.forced
    assert plan.fallback_path is None  # Matroska holds everything


@pytest.mark.parametrize("name, container", [("out.mp4", "mp4"), ("OUT.MP4", "mp4"), ("out.m4v", "mp4"),
                                             ("out.mov", "mov"), ("out.Mkv", "mkv"), ("out.webm", "webm")])
def test_the_suffix_chooses_the_container(info, name, container):
    video_codec = "vp9" if container == "webm" else "h264"
    src = with_streams(info, ("audio", "opus" if container == "webm" else "aac"))
    plan = plan_mux(Path("/o") / name, src, video_codec=video_codec)
    assert plan.container == container and plan.path == Path("/o") / name and plan.notes == []
    assert plan.fallback_path == (None if container == "mkv" else (Path("/o") / name).with_suffix(".mkv"))


@pytest.mark.parametrize("name, shown", [("out.avi", ".avi"), ("out", "(none)")])
def test_an_unknown_suffix_becomes_mkv(info, name, shown):
    plan = plan_mux(Path("/o") / name, with_streams(info), video_codec="h264")
    assert plan.container == "mkv" and plan.path == Path("/o/out.mkv")
    assert plan.notes == [f"output container {shown} is not supported for video; writing .mkv"]


def test_streams_the_container_cannot_hold_move_the_output_to_mkv(info):
    src = with_streams(info, ("audio", "aac"), ("audio", "pcm_s16le"), ("subtitle", "ass"))
    plan = plan_mux(Path("/o/out.mp4"), src, video_codec="ffv1")
    assert plan.container == "mkv" and plan.path == Path("/o/out.mkv") and not plan.forced
    assert plan.notes == ["output written as .mkv instead of .mp4: mp4 cannot hold video ffv1, audio pcm_s16le, "
                          "subtitle ass"]
    assert [s.codec for s in plan.keep] == ["aac", "pcm_s16le", "ass"]


def test_mov_holds_pcm_and_mp4_text_subtitles(info):
    src = with_streams(info, ("audio", "pcm_s24le"), ("subtitle", "mov_text"))
    plan = plan_mux(Path("/o/out.mov"), src, video_codec="prores")
    assert plan.container == "mov" and plan.notes == []


def test_a_named_container_is_never_switched(info):
    src = with_streams(info, ("audio", "pcm_s16le"))
    with pytest.raises(VsrError) as e:
        plan_mux(Path("/o/out.mkv"), src, video_codec="h264", container="mp4")
    assert str(e.value) == "mp4 cannot hold audio pcm_s16le; use the mkv container"
    with pytest.raises(VsrError) as e:
        plan_mux(Path("/o/out.mp4"), with_streams(info), video_codec="ffv1", container="mp4")
    assert str(e.value) == "mp4 cannot hold video ffv1; use the mkv container"
    with pytest.raises(VsrError) as e:
        plan_mux(Path("/o/out.mp4"), src, video_codec="ffv1", container="mp4")
    assert str(e.value) == "mp4 cannot hold video ffv1, audio pcm_s16le; use the mkv container"
    with pytest.raises(VsrError) as e:
        plan_mux(Path("/o/out.mp4"), with_streams(info), video_codec="h264", container="avi")
    assert str(e.value) == f"unknown container 'avi'; expected one of: {', '.join(CONTAINERS)}"


def test_a_named_container_sets_the_suffix(info):
    plan = plan_mux(Path("/o/out.mkv"), with_streams(info, ("audio", "aac")), video_codec="h264", container="mp4")
    assert plan.container == "mp4" and plan.forced and plan.path == Path("/o/out.mp4")
    assert plan.notes == ["output written as out.mp4 (container mp4)"] and plan.fallback_path is None
    same = plan_mux(Path("/o/out.m4v"), with_streams(info), video_codec="h264", container="mp4")
    assert same.path == Path("/o/out.m4v") and same.notes == []
    mkv = plan_mux(Path("/o/out.mkv"), with_streams(info), video_codec="h264", container="mkv")
    assert mkv.path == Path("/o/out.mkv") and mkv.forced and mkv.notes == []


@pytest.mark.parametrize("container, stream, held", [
    ("mkv", ("data", "anything"), True), ("mp4", ("audio", "aac"), True), ("mp4", ("audio", "vorbis"), False),
    ("mp4", ("subtitle", "mov_text"), True), ("mp4", ("attachment", "ttf"), False), ("webm", ("video", "vp8"), True),
    ("webm", ("audio", "aac"), False), ("mov", ("data", "tmcd"), False),
])
def test_what_each_container_holds(container, stream, held):
    assert _holds(container, StreamInfo(index=1, type=stream[0], codec=stream[1])) is held


def test_disposition_flags_are_named_for_ffmpeg():
    flags = {d.name: d.value for d in av.stream.Disposition}
    assert _disposition_arg(0) == "0"
    assert _disposition_arg(flags["default"]) == "default"
    assert _disposition_arg(flags["comment"] | flags["forced"]) == "comment+forced"
    assert _disposition_arg(flags["default"] | flags["hearing_impaired"]) == "default+hearing_impaired"
