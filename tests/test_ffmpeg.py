"""The ffmpeg binary: which one runs (VSR_FFMPEG), what it can do, what happens where it cannot, and how its
failures read."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from vsr.cli import main
from vsr.errors import VsrError
from vsr.video import VideoOptions, probe, transcode
from vsr.video import ffmpeg as ff

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402


def test_vsr_ffmpeg_picks_the_binary(monkeypatch, tmp_path):
    bundled = ff.bundled_exe()
    if bundled is None:
        pytest.skip("imageio-ffmpeg has no binary here")
    monkeypatch.setenv(ff.ENV, "bundled")
    assert ff.ffmpeg_exe() == bundled
    monkeypatch.setenv(ff.ENV, bundled)
    assert ff.ffmpeg_exe() == bundled
    if shutil.which("ffmpeg"):
        monkeypatch.setenv(ff.ENV, "system")
        assert ff.ffmpeg_exe() == shutil.which("ffmpeg")
    for wrong in (str(tmp_path / "no-ffmpeg-here"), str(tmp_path)):
        monkeypatch.setenv(ff.ENV, wrong)
        with pytest.raises(VsrError) as err:
            ff.ffmpeg_exe()
        assert "\n" not in str(err.value) and f"{ff.ENV}={wrong}" in str(err.value)


@pytest.mark.parametrize("version,release", [("5.1.9-0+deb12u1", (5, 1)), ("4.4.2-0ubuntu0.22.04.1", (4, 4)),
                                             ("n9.0.2-17-g2a571b6068-20260930", (9, 0)), ("7.1", (7, 1)),
                                             ("N-113212-g1a2b3c4d5e", None)])
def test_release_from_the_version_string(version, release):
    assert ff.parse_release(version) == release


def test_what_each_binary_at_hand_can_do():
    for exe in {ff.ffmpeg_exe(), ff.bundled_exe()} - {None}:
        release = ff.parse_release(ff.version(exe))
        assert release is None or release >= ff.OLDEST, ff.describe(exe)
        assert ff.has_option(exe, "hide_banner") and not ff.has_option(exe, "no_such_option")
        if release is not None:  # -display_rotation arrived in ffmpeg 6.0
            assert ff.has_option(exe, "display_rotation") == (release >= (6, 0)), ff.describe(exe)


def test_without_display_rotation_the_step_goes_elsewhere(monkeypatch):
    """An ffmpeg before 6.0: the rotate tag where its muxer reads one (MP4/MOV), the bundled binary for
    Matroska, and nothing where there is no bundled binary either."""
    old, bundled = "/opt/old/ffmpeg", "/opt/bundled/ffmpeg"
    monkeypatch.setattr(ff, "ffmpeg_exe", lambda: old)
    monkeypatch.setattr(ff, "bundled_exe", lambda: bundled)
    monkeypatch.setattr(ff, "has_option", lambda exe, option: exe == bundled)
    assert ff.rotation_args(90, "mp4") == (old, {}, ["-metadata:s:0", "rotate=90"])
    assert ff.rotation_args(270, "mov") == (old, {}, ["-metadata:s:0", "rotate=270"])
    assert ff.rotation_args(90, "mkv") == (bundled, {"display_rotation": "90"}, [])
    assert ff.rotation_args(180, "mkv", exe=bundled) == (bundled, {"display_rotation": "180"}, [])
    monkeypatch.setattr(ff, "bundled_exe", lambda: None)
    assert ff.rotation_args(90, "mkv") is None


def test_a_rotation_no_binary_can_write_is_a_note(tmp_path, monkeypatch):
    clip = media.tag_rotation(media.make_mp4(tmp_path / "plain.mp4", frames=3), tmp_path / "phone.mp4", 90)
    monkeypatch.setattr(ff, "has_option", lambda exe, option: False)  # every binary before 6.0...
    monkeypatch.setattr("vsr.video.mux.bundled_exe", lambda: None)  # ...and none bundled
    monkeypatch.setattr(ff, "bundled_exe", lambda: None)
    res = transcode(clip, tmp_path / "out.mkv", lambda x, *_: x, 1, VideoOptions(quiet=True, preset="ultrafast"))
    assert probe(res.output).rotation == 0  # written, turned from the input
    assert any("rotation tag could not be written into out.mkv" in n for n in res.notes), res.notes


@pytest.mark.skipif(os.name == "nt", reason="the stand-in ffmpeg is a shell script")
def test_a_failing_ffmpeg_is_one_line_naming_the_step_and_the_file(tmp_path, monkeypatch, capsys, tiny_weights):
    """What Debian 12's ffmpeg said to an option it did not know, as `vsr upscale` reports it."""
    src = media.make_mp4(tmp_path / "phone clip.mp4", frames=3)
    exe = tmp_path / "old-ffmpeg"
    exe.write_text("#!/bin/sh\necho \"Unrecognized option 'display_rotation'.\" >&2\n"
                   "echo 'Error splitting the argument list: Option not found' >&2\nexit 1\n")
    exe.chmod(0o755)
    monkeypatch.setenv(ff.ENV, str(exe))
    out = tmp_path / "out.mp4"
    code = main(["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), "--quiet", "--deinterlace", "off",
                 "--precision", "fp32", "--backend", "torch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    line = err[0]
    assert "internal error" not in line and str(src) in line, line
    # (the MP4 refused, the step is tried again as Matroska, the container that holds everything)
    assert "joining the new video and the copied streams into out.mkv" in line, line
    assert "Unrecognized option 'display_rotation'" in line, line
    assert f"at {exe}" in line and f"{ff.ENV}=bundled" in line, line
    assert not out.exists()


def test_a_stuck_ffmpeg_is_stopped_with_one_line(tmp_path, monkeypatch):
    """A step whose ffmpeg makes no progress (here it waits for a writer on a pipe that never comes) is
    stopped after STALL_S, tried once more, and said in one line, instead of holding the run forever."""
    fifo = tmp_path / "never.fifo"
    os.mkfifo(fifo)
    monkeypatch.setattr(ff, "STALL_S", 1.5)
    stuck = r"never.fifo: ffmpeg made no progress for 1.5 s while reading a pipe, twice"
    with pytest.raises(ff.FfmpegError, match=stuck):
        ff.run_ffmpeg(["-f", "rawvideo", "-pix_fmt", "gray", "-s", "8x8", "-i", str(fifo), str(tmp_path / "o.mkv")],
                      what="reading a pipe", path=fifo)
    assert not (tmp_path / "o.mkv").exists()
