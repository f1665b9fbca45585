"""Bad-input corpus: files as phones, cameras, capture cards and file systems make them, each run through
`vsr upscale` as a user would. Every case ends either in a clean refusal (non-zero exit, one line on
stderr and no traceback, nothing at the final output path, the input's bytes unchanged) or in a correct
output, checked with PyAV/PIL (size, orientation, chroma format, stream list, timestamps).

Here (33 cases):

    odd 61x45 at x4 -> 244x180, 2x2 video   test_video_sizes_and_pixel_formats (9: sizes, 4:4:4, 4:2:2,
      yuv444p10le, grey, grey 10-bit, RGB     10-bit, grey, RGB, H.264 4:4:4 in MP4)
    grey video: no colour invented          test_grey_video_comes_out_grey_with_neutral_chroma
    timestamps from -0.2 s                  test_negative_start_times_are_kept_in_step
    cover art (MP4 attached_pic, MKV        test_cover_art_is_copied_and_the_video_upscaled (3)
      attachment, PNG track before video)
    timecode data stream                    test_a_data_stream_is_left_out_with_a_note
    three audio tracks                      test_three_audio_tracks_are_copied_bit_for_bit
    unicode, -name, 12:30 name, -out/       test_unicode_dash_and_colon_names (6)
    61x45, 1x1 and 2x2 images               test_odd_and_tiny_images (3)
    links, dangling links, link loops,      test_symlinks_and_symlink_loops_in_a_folder
      a linked folder, a folder loop
    unreadable file (video, image, in a     test_file_permissions (5: refused, or a failed row in a folder)
      folder), unwritable output folder
    two runs on one output                  test_two_runs_on_the_same_output_one_refuses
    input replaced between kill -9 and      test_input_changed_between_a_killed_run_and_its_resume
      the resume

Covered by other test files (not repeated here):

    rotation (display matrix 90)       test_orientation.py::test_phone_clip_keeps_its_rotation_and_displays_...
    EXIF orientation 1-8               test_orientation.py::test_every_exif_orientation_reads_as_displayed,
                                       test_orientation.py::test_sideways_phone_photo_is_upscaled_as_displayed
    4:4:4 / 4:2:2 kept (transcode)     test_video.py::test_chroma_sampling_of_the_input_is_kept
    10-bit 4:2:0 stays 10-bit          test_video.py::test_ten_bit_stays_ten_bit
    grey / 16-bit / alpha images       test_cli.py::test_formats_depths_grey_and_alpha
    VFR, late video start, odd size,   test_upscale_video.py::test_video_through_the_network_keeps_every_...
      anamorphic, 2 audio, subs, font
    non-zero start (MPEG-TS at 1.4 s)  test_video.py::test_late_start_moves_to_zero_keeping_offsets
    empty, text, truncated, audio-only test_upscale_video.py::test_bad_video_inputs_give_one_line_errors_...,
                                       test_cli.py::test_bad_inputs_give_one_line_errors_and_write_nothing
    garbled and truncated streams      test_fuzz.py
    kill -9 / Ctrl-C then resume       test_resume.py::test_sigkill_and_ctrl_c_then_the_same_command_finishes
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402
from conftest import tiny  # noqa: E402

from vsr import images, weights  # noqa: E402
from vsr.cli import main  # noqa: E402
from vsr.video.ffmpeg import run_ffmpeg  # noqa: E402
from vsr.video.resume import MANIFEST, work_dir_for  # noqa: E402

FAST = ["--encoder-preset", "ultrafast", "--deinterlace", "off", "--quiet"]


@pytest.fixture(scope="module")
def x4(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny-x4.safetensors"
    weights.save(tiny("compact", nf=8, num_conv=1, upscale=4), path)
    return path


@pytest.fixture(scope="module")
def x2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny-x2.safetensors"
    weights.save(tiny("compact", nf=8, num_conv=1, upscale=2), path)
    return path


# --- making the inputs --------------------------------------------------------------------------------

def lavfi_video(path: Path, *, width: int = 32, height: int = 24, frames: int = 4, pix_fmt: str = "yuv420p",
                codec: str = "ffv1", extra: list[str] | None = None) -> Path:
    vf = media.video_filter(width=width, height=height, frames=frames, pix_fmt=pix_fmt)
    run_ffmpeg(["-f", "lavfi", "-i", vf, "-c:v", codec, *(extra or []), str(path)], what="making a corpus clip")
    return path


def negative_start(path: Path) -> Path:
    """Video and audio timestamps starting at -0.2 s (Matroska allows it; edited camera files have it)."""
    vf = media.video_filter(width=32, height=24, frames=6, pix_fmt="yuv420p")
    run_ffmpeg(["-f", "lavfi", "-i", vf, "-f", "lavfi", "-i", "sine=frequency=440:duration=0.24", "-c:v", "ffv1",
                "-c:a", "flac", "-output_ts_offset", "-0.2", "-avoid_negative_ts", "disabled", str(path)],
               what="making a negative start")
    return path


def cover_art(path: Path, *, as_track: bool = False) -> Path:
    """A music-video style file with a cover picture. MP4: an attached_pic stream first; MKV: an image
    attachment (mkvmerge's cover.png), or with as_track a one-frame PNG track before the video, which is
    what ffmpeg writes when it copies an MP4's cover into Matroska."""
    work = path.parent
    pic = work / "cover.png"
    images.write_image(pic, np.full((20, 20, 3), (200, 30, 90), np.uint8))
    plain = media.make_mp4(work / f"{path.stem}-plain.mp4", width=32, height=24, frames=4)
    if path.suffix == ".mkv" and not as_track:
        args = ["-i", str(plain), "-map", "0", "-c", "copy", "-attach", str(pic), "-metadata:s:t",
                "mimetype=image/png", "-metadata:s:t", "filename=cover.png"]
    else:
        args = ["-i", str(pic), "-i", str(plain), "-map", "0", "-map", "1:v", "-map", "1:a", "-c", "copy",
                "-disposition:v:0", "0" if as_track else "attached_pic", "-disposition:v:1", "default"]
    run_ffmpeg([*args, str(path)], what="adding cover art")
    pic.unlink()
    plain.unlink()
    return path


def data_stream(path: Path) -> Path:
    """A camera MOV/MP4 with a timecode track (a data stream, tmcd)."""
    return lavfi_video(path, codec="libx264", extra=["-preset", "ultrafast", "-timecode", "01:00:00:00"])


def three_audio(path: Path) -> Path:
    vf = media.video_filter(width=32, height=24, frames=5, pix_fmt="yuv420p")
    args = ["-f", "lavfi", "-i", vf]
    for f in (440, 550, 660):
        args += ["-f", "lavfi", "-i", f"sine=frequency={f}:duration=0.2"]
    args += ["-map", "0", "-map", "1", "-map", "2", "-map", "3", "-c:v", "ffv1", "-c:a:0", "aac", "-c:a:1", "flac",
             "-c:a:2", "pcm_s16le"]
    for i, lang in enumerate(("eng", "fre", "ger")):
        args += [f"-metadata:s:a:{i}", f"language={lang}"]
    run_ffmpeg([*args, str(path)], what="making three audio tracks")
    return path


# --- what an output holds ---------------------------------------------------------------------------

def streams(path: Path) -> list[tuple[str, str, int]]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else "", int(s.disposition)) for s in c.streams]


def main_video(c: av.container.InputContainer) -> av.video.stream.VideoStream:
    return next(s for s in c.streams.video if not s.disposition & av.stream.Disposition.attached_pic
                and s.codec_context.name != "png")


def video_facts(path: Path) -> tuple[int, int, str, list[float]]:
    """Coded size, pixel format and every frame's time (s) of the main video stream."""
    with av.open(str(path)) as c:
        v = main_video(c)
        times = [float(f.pts * f.time_base) for f in c.decode(v)]
        return v.codec_context.width, v.codec_context.height, v.codec_context.pix_fmt, times


def packets(path: Path, kind: str) -> list[list[bytes]]:
    """The bytes of every packet of every stream of one kind (audio, or cover pictures)."""
    with av.open(str(path)) as c:
        chosen = [s for s in c.streams if s.type == kind] if kind != "cover" else \
            [s for s in c.streams.video if s.disposition & av.stream.Disposition.attached_pic]
        out: dict[int, list[bytes]] = {s.index: [] for s in chosen}
        for p in c.demux(chosen):
            if p.size:
                out[p.stream.index].append(bytes(p))
        return list(out.values())


def upscale(capsys, *args) -> tuple[int, str]:
    code = main(["upscale", *map(str, args)])
    return code, capsys.readouterr().err


# --- videos that must come out right ----------------------------------------------------------------

VIDEO_CASES = {
    # id: (make(path), suffix, model, expected coded size, pixel format)
    "odd-61x45-x4": (lambda p: lavfi_video(p, width=61, height=45), ".mkv", "x4", (244, 180), "yuv420p"),
    "tiny-2x2-x4": (lambda p: lavfi_video(p, width=2, height=2), ".mkv", "x4", (8, 8), "yuv420p"),
    "yuv444p": (lambda p: lavfi_video(p, pix_fmt="yuv444p"), ".mkv", "x2", (64, 48), "yuv444p"),
    "yuv422p": (lambda p: lavfi_video(p, pix_fmt="yuv422p"), ".mkv", "x2", (64, 48), "yuv422p"),
    "yuv444p10le": (lambda p: lavfi_video(p, pix_fmt="yuv444p10le"), ".mkv", "x2", (64, 48), "yuv444p10le"),
    "gray": (lambda p: lavfi_video(p, pix_fmt="gray"), ".mkv", "x2", (64, 48), "yuv420p"),
    "gray10le": (lambda p: lavfi_video(p, pix_fmt="gray10le"), ".mkv", "x2", (64, 48), "yuv420p10le"),
    "rgb-bgr0": (lambda p: lavfi_video(p, pix_fmt="bgr0"), ".mkv", "x2", (64, 48), "yuv444p"),
    "h264-yuv444p": (lambda p: lavfi_video(p, pix_fmt="yuv444p", codec="libx264", extra=["-preset", "ultrafast"]),
                     ".mp4", "x2", (64, 48), "yuv444p"),
}


@pytest.mark.parametrize("case", list(VIDEO_CASES))
def test_video_sizes_and_pixel_formats(case, tmp_path, capsys, x2, x4):
    make, suffix, model, size, pix_fmt = VIDEO_CASES[case]
    src = make(tmp_path / f"in{suffix}")
    before = src.read_bytes()
    out = tmp_path / f"out{suffix}"
    code, err = upscale(capsys, src, "-o", out, "--model", {"x2": x2, "x4": x4}[model], *FAST)
    assert code == 0, err
    w, h, fmt, times = video_facts(out)
    assert ((w, h), fmt) == (size, pix_fmt)
    assert times == pytest.approx(video_facts(src)[3], abs=1e-3)
    assert src.read_bytes() == before


def test_grey_video_comes_out_grey_with_neutral_chroma(tmp_path, capsys, x2):
    """Grey is written as 4:2:0 (what every player decodes) whose chroma carries no colour."""
    src = lavfi_video(tmp_path / "grey.mkv", pix_fmt="gray")
    out = tmp_path / "grey_out.mkv"
    assert upscale(capsys, src, "-o", out, "--model", x2, "--codec", "ffv1", *FAST[2:])[0] == 0
    with av.open(str(src)) as a, av.open(str(out)) as b:
        small = next(a.decode(video=0)).to_ndarray().astype(float)  # (24, 32) luma only
        planes = next(b.decode(video=0)).to_ndarray().astype(float)  # (72, 64): Y, then U and V
    big, chroma = planes[:48], planes[48:]
    assert np.abs(chroma - 128).max() <= 1  # no colour made up by the network
    assert np.abs(big[::2, ::2] - small).mean() < 20  # the same picture, upscaled by a tiny network


def first_times(path: Path) -> dict[str, float]:
    """Each stream kind's first packet time (s): what a player lines up."""
    firsts: dict[str, float] = {}
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.size and p.pts is not None:
                t = float(p.pts * p.time_base)
                firsts[p.stream.type] = min(t, firsts.get(p.stream.type, t))
    return firsts


def test_negative_start_times_are_kept_in_step(tmp_path, capsys, x2):
    src = negative_start(tmp_path / "neg.mkv")
    starts = first_times(src)
    assert starts["video"] < -0.15 and starts["audio"] < -0.15  # the input really starts before zero
    out = tmp_path / "neg_out.mkv"
    code, err = upscale(capsys, src, "-o", out, "--model", x2, *FAST)
    assert code == 0, err
    src_times, out_times = video_facts(src)[3], video_facts(out)[3]
    shift = out_times[0] - src_times[0]  # the whole file moves to start at zero, every stream together
    assert out_times == pytest.approx([t + shift for t in src_times], abs=1e-3)
    out_starts = first_times(out)
    assert min(out_starts.values()) == pytest.approx(0, abs=2e-3)
    assert out_starts["audio"] - out_starts["video"] == pytest.approx(starts["audio"] - starts["video"], abs=1e-3)
    assert packets(out, "audio") == packets(src, "audio")


def cover_pictures(path: Path) -> list[bytes]:
    """The cover's bytes: an attached_pic stream's packet, or a PNG track's one frame."""
    with av.open(str(path)) as c:
        covers = [s for s in c.streams.video if s.disposition & av.stream.Disposition.attached_pic
                  or s.codec_context.name == "png"]
        return [bytes(p) for p in c.demux(covers) if p.size]


@pytest.mark.parametrize("suffix,as_track", [(".mp4", False), (".mkv", False), (".mkv", True)],
                         ids=["mp4-attached-pic", "mkv-attachment", "mkv-png-track-first"])
def test_cover_art_is_copied_and_the_video_upscaled(tmp_path, capsys, x2, suffix, as_track):
    src = cover_art(tmp_path / f"song{suffix}", as_track=as_track)
    assert len(cover_pictures(src)) == 1
    out = tmp_path / f"song_out{suffix}"
    code, err = upscale(capsys, src, "-o", out, "--model", x2, *FAST)
    assert code == 0, err
    assert sorted(streams(out)) == sorted(streams(src))
    assert cover_pictures(out) == cover_pictures(src)
    w, h, _, times = video_facts(out)
    assert (w, h) == (64, 48) and len(times) == 4
    assert packets(out, "audio") == packets(src, "audio")


def test_a_data_stream_is_left_out_with_a_note(tmp_path, capsys, x2):
    src = data_stream(tmp_path / "camera.mp4")
    assert [t for t, _, _ in streams(src)] == ["video", "data"]
    out = tmp_path / "camera_out.mp4"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(x2), *FAST, "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("stream 1 (data) not copied" in n for n in notes), notes
    assert [t for t, _, _ in streams(out)] == ["video"]
    assert video_facts(out)[:2] == (64, 48)


def test_three_audio_tracks_are_copied_bit_for_bit(tmp_path, capsys, x2):
    src = three_audio(tmp_path / "dub.mkv")
    out = tmp_path / "dub_out.mkv"
    code, err = upscale(capsys, src, "-o", out, "--model", x2, *FAST)
    assert code == 0, err
    assert [t for t, _, _ in streams(out)] == ["video", "audio", "audio", "audio"]
    assert packets(out, "audio") == packets(src, "audio")
    with av.open(str(out)) as c:
        assert [s.metadata.get("language") for s in c.streams.audio] == ["eng", "fre", "ger"]


@pytest.mark.parametrize("name,output", [
    ("épisode 東京 ü.mp4", None), ("-clip.mp4", None), ("-image.png", None), ("12:30 tape.mp4", None),
    ("clip.mp4", "-out/clip.mkv"), ("clip.mp4", "-out/"),
], ids=["unicode", "leading-dash", "leading-dash-image", "colon", "leading-dash-output", "leading-dash-folder"])
def test_unicode_dash_and_colon_names(tmp_path, capsys, monkeypatch, x2, name, output):
    """Names FFmpeg could misread: an option (-name), a protocol (12:30 reads as protocol "12")."""
    monkeypatch.chdir(tmp_path)
    src = Path(name)
    if src.suffix == ".png":
        images.write_image(src, (np.random.default_rng(0).random((12, 16, 3)) * 255).astype(np.uint8))
    else:
        media.make_mp4(tmp_path / "made.mp4", width=32, height=24, frames=4).rename(src)
    before = src.read_bytes()
    out = Path(f"{src.stem}_vsr{src.suffix}") if output is None else Path(output)
    if output and output.endswith("/"):
        out.mkdir()
    where = [] if output is None else [f"--output={output}"]
    code, err = upscale(capsys, "--model", x2, *FAST, *where, "--", name)  # `--`: a name may start with a dash
    assert code == 0, err
    out = out / src.name if out.is_dir() else out
    shown = tmp_path / out  # PyAV, as FFmpeg, reads "12:30 ..." as a URL: the tests open absolute paths
    if src.suffix == ".png":
        assert images.read_image(out).shape == (24, 32, 3)
    else:
        assert video_facts(shown)[:2] == (64, 48) and [t for t, _, _ in streams(shown)] == ["video", "audio"]
    assert src.read_bytes() == before
    made = sorted(str(p) for p in Path(".").rglob("*"))  # no work folder, lock or partial file left
    assert made == sorted({name, str(out), *map(str, out.parents)} - {"."})


# --- images ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(45, 61), (1, 1), (2, 2)], ids=["61x45", "1x1", "2x2"])
def test_odd_and_tiny_images(tmp_path, capsys, x4, h, w):
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    images.write_image(src, (np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8))
    code, err = upscale(capsys, src, "-o", out, "--model", x4, "--quiet")
    assert code == 0, err
    assert images.read_image(out).shape == (4 * h, 4 * w, 3)


# --- folders and file systems ------------------------------------------------------------------------

def small_png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images.write_image(path, (np.random.default_rng(seed).random((6, 8, 3)) * 255).astype(np.uint8))
    return path


def test_symlinks_and_symlink_loops_in_a_folder(tmp_path, capsys, x2):
    src, outside = tmp_path / "in", tmp_path / "elsewhere"
    small_png(src / "real.png")
    small_png(outside / "away.png", seed=1)
    small_png(outside / "sub" / "deep.png", seed=2)
    (src / "link-in.png").symlink_to("real.png")
    (src / "link-out.png").symlink_to(outside / "away.png")
    (src / "dangling.png").symlink_to("gone.png")
    (src / "loop-a.png").symlink_to("loop-b.png")
    (src / "loop-b.png").symlink_to("loop-a.png")
    (src / "linked-dir").symlink_to(outside / "sub", target_is_directory=True)
    (src / "sub").mkdir()
    (src / "sub" / "up").symlink_to("..", target_is_directory=True)  # a folder loop
    out = tmp_path / "out"
    start = time.monotonic()
    code = main(["upscale", str(src), "-o", str(out), "--model", str(x2), "--quiet", "--json"])
    assert time.monotonic() - start < 30  # no endless walk
    report = json.loads(capsys.readouterr().out)
    done = sorted(Path(p).relative_to(out).as_posix() for p in report["outputs"])
    assert done == ["link-in.png", "link-out.png", "linked-dir/deep.png", "real.png"]
    for name in done:  # real files, not links into the input
        assert not (out / name).is_symlink() and images.read_image(out / name).shape == (12, 16, 3)
    failed = {Path(k).name: v for k, v in report["failed"].items()}
    assert sorted(failed) == ["dangling.png", "loop-a.png", "loop-b.png"] and code == 1
    assert all("symbolic link" in why for why in failed.values()), failed


def without_permission_overrides() -> list[str]:
    """The command prefix that runs the product as an ordinary user would be: as root, without the
    capabilities that let root read and write files whatever their permissions. (A non-root user cannot
    be used: this Python lives under /root.)"""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: root reads and writes every file, so file permissions "
                    "cannot be tested")
    caps = "-dac_override,-dac_read_search"
    prefix = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]
    locked = tempfile.NamedTemporaryFile()
    os.chmod(locked.name, 0)
    with locked:
        check = subprocess.run([*prefix, "test", "-r", locked.name], capture_output=True)
    if check.returncode == 0 or check.stderr:
        pytest.skip(f"setpriv cannot drop root's file capabilities here: {check.stderr.decode().strip()}")
    return prefix


# Runs several `vsr` command lines in one process (one start-up for all), each with its own stdout and
# stderr captured at the file descriptors, so library output written from C is seen too.
DRIVER = """
import json, os, sys, tempfile
from vsr.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved = [os.dup(1), os.dup(2)]
    for fd, f in zip((1, 2), files):
        os.dup2(f.fileno(), fd)
    try:
        code = main(argv)
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
    results.append([code] + [(f.seek(0), f.read().decode())[1] for f in files])
print(json.dumps(results))
"""

PERMISSION_CASES = ["unreadable-video", "unreadable-image", "unreadable-file-in-folder", "unwritable-folder-video",
                    "unwritable-folder-image"]


@pytest.fixture(scope="module")
def permission_runs(tmp_path_factory, x2) -> dict[str, dict]:
    prefix = without_permission_overrides()
    cases, argvs, restore = {}, [], []
    for case in PERMISSION_CASES:
        d = tmp_path_factory.mktemp(case)
        if case.endswith("video"):
            src = media.make_mp4(d / "in.mp4", width=32, height=24, frames=3)
        elif case.endswith("image"):
            src = small_png(d / "in.png")
        else:
            src = d / "in"
            small_png(src / "a.png")
            small_png(src / "b.png", seed=1)
        out_dir = d / "out"
        out_dir.mkdir()
        blocked = out_dir if case.startswith("unwritable") else (src / "b.png" if src.is_dir() else src)
        blocked.chmod(0o555 if blocked.is_dir() else 0o200)
        restore.append(blocked)
        out = out_dir if src.is_dir() else out_dir / f"out{src.suffix}"
        argvs.append(["upscale", str(src), "-o", str(out), "--model", str(x2), *FAST, "--json"])
        cases[case] = dict(src=src, out_dir=out_dir, blocked=blocked,
                           before=None if src.is_dir() else os.stat(src).st_size)
    try:
        r = subprocess.run([*prefix, sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True,
                           text=True, timeout=120)
    finally:
        for p in restore:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert r.returncode == 0, r.stderr
    for case, (code, out, err) in zip(PERMISSION_CASES, json.loads(r.stdout.strip().splitlines()[-1])):
        cases[case].update(code=code, stdout=out, stderr=err)
    return cases


@pytest.mark.parametrize("case", PERMISSION_CASES)
def test_file_permissions(permission_runs, case):
    run = permission_runs[case]
    if case == "unreadable-file-in-folder":  # reported in the summary; the rest of the folder is done
        report = json.loads(run["stdout"])
        assert run["code"] == 1 and report["outputs"] == [str(run["out_dir"] / "a.png")], run
        assert list(report["failed"]) == [str(run["blocked"])]
        assert "cannot be read (permission denied)" in report["failed"][str(run["blocked"])]
        return
    lines = run["stderr"].strip().splitlines()
    assert run["code"] == 1 and len(lines) == 1 and "Traceback" not in run["stderr"], run
    where = run["src"] if case.startswith("unreadable") else run["out_dir"]
    why = "cannot be read (permission denied)" if case.startswith("unreadable") else "(permission denied)"
    assert str(where) in lines[0] and why in lines[0], lines[0]
    assert list(run["out_dir"].iterdir()) == [] and run["src"].stat().st_size == run["before"]


# --- two runs, and a changed input between runs ------------------------------------------------------

def wait_for_segments(work: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            if len(json.loads((work / MANIFEST).read_text())["segments"]) >= n:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"no {n} finished segments in {work} (exit {proc.poll()})")


def cli(src: Path, out: Path, model: Path) -> list[str]:
    # named: a run in another process chooses `auto` without the tests' settings (conftest.py)
    return ["upscale", str(src), "-o", str(out), "--model", str(model), "--codec", "ffv1", "--segment-frames", "4",
            "--quiet", "--deinterlace", "off", "--precision", "fp32", "--backend", "torch"]


def test_two_runs_on_the_same_output_one_refuses(tmp_path, capsys, x2):
    src = media.make_clip(tmp_path / "in.mp4", seconds=1.6, width=64, height=48)
    out = tmp_path / "out.mkv"
    first = subprocess.Popen([sys.executable, "-m", "vsr", *cli(src, out, x2)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_segments(work_dir_for(out), 1, first)
        first.send_signal(signal.SIGSTOP)  # held mid-run: it owns the output's work
        second = [upscale(capsys, *cli(src, out, x2)[1:], *extra) for extra in ([], ["--no-resume"])]
    finally:
        first.send_signal(signal.SIGCONT)
        _, first_err = first.communicate(timeout=120)
    for code, err in second:
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and f"another vsr run (process {first.pid}) is writing" in lines[0], err
    assert first.returncode == 0, first_err
    w, h, _, times = video_facts(out)
    assert (w, h) == (128, 96) and times == pytest.approx(video_facts(src)[3], abs=1e-3)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mkv"]  # no work folder, lock or partial file left


def test_input_changed_between_a_killed_run_and_its_resume(tmp_path, capsys, x2):
    src = media.make_clip(tmp_path / "in.mp4", seconds=1.6, width=64, height=48)
    out = tmp_path / "out.mkv"
    proc = subprocess.Popen([sys.executable, "-m", "vsr", *cli(src, out, x2)], stderr=subprocess.PIPE, text=True)
    wait_for_segments(work_dir_for(out), 1, proc)
    proc.kill()
    proc.wait()
    assert not out.exists() and work_dir_for(out).exists()
    media.make_mp4(src, width=48, height=40, frames=12)  # the file is replaced by another video
    code = main(cli(src, out, x2) + ["--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and any("does not match (input changed)" in n for n in report["notes"]), report["notes"]
    w, h, _, times = video_facts(out)
    assert (w, h) == (96, 80) and times == pytest.approx(video_facts(src)[3], abs=1e-3)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mkv"]
