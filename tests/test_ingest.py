"""Analog ingest: interlacing found and removed, borders and head switching cropped, BT.601 -> BT.709 for
HD outputs, non-square DVD pixels shown at the right aspect, restoration presets."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analog_media as am  # noqa: E402

from vsr.errors import VsrError  # noqa: E402
from vsr.video import IngestOptions, VideoOptions, probe, transcode  # noqa: E402
from vsr.video.ingest import combing, detect_crop, detect_interlace  # noqa: E402

LOSSLESS = dict(quiet=True, codec="ffv1")


def identity(x: np.ndarray, *_) -> np.ndarray:
    return x


def up(k: int):
    def process(x: np.ndarray, *_) -> np.ndarray:  # (N, H, W, 3) -> (N, kH, kW, 3)
        return np.repeat(np.repeat(x, k, axis=1), k, axis=2)
    return process


def mean_combing(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(np.mean([combing(f.to_ndarray(format="gray")) for f in c.decode(video=0)]))


def video_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.pts * s.time_base for f in c.decode(s)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(audio=0) if p.size]


@pytest.fixture(scope="module")
def interlaced(tmp_path_factory) -> Path:
    return am.make_interlaced(tmp_path_factory.mktemp("il") / "woven.mkv", frames=20)


def test_idet_finds_interlacing_and_field_order(interlaced, tmp_path):
    assert detect_interlace(probe(interlaced))[:2] == (True, "tff")
    prog = am.make_progressive_twin(tmp_path / "prog.mkv", frames=20)
    assert detect_interlace(probe(prog))[0] is False


@pytest.mark.parametrize("double_rate", [False, True])
def test_deinterlaced_without_combing_at_the_right_rate(interlaced, tmp_path, double_rate):
    opts = VideoOptions(**LOSSLESS, ingest=IngestOptions(deinterlace="auto", double_rate=double_rate))
    res = transcode(interlaced, tmp_path / "out.mkv", identity, 1, opts)
    assert any("bwdif" in n for n in res.notes)
    src_times, out_times = video_times(interlaced), video_times(res.output)
    if double_rate:  # one frame per field, at field times: 50 fps from 25
        assert len(out_times) == 2 * len(src_times)
        assert out_times[::2] == src_times and out_times[1] - out_times[0] == Fraction(1, 50)
    else:
        assert out_times == src_times
    before, after = mean_combing(interlaced), mean_combing(res.output)
    assert after < before / 3, (before, after)
    assert audio_packets(res.output) == audio_packets(interlaced)  # copied: still in sync, bit for bit


def test_progressive_input_is_left_alone_by_auto(tmp_path):
    prog = am.make_progressive_twin(tmp_path / "prog.mkv", frames=10)
    res = transcode(prog, tmp_path / "out.mkv", identity, 1,
                    VideoOptions(**LOSSLESS, ingest=IngestOptions(deinterlace="auto", double_rate=True)))
    assert res.frames == 10 and not any("interlaced" in n for n in res.notes)


def test_crop_auto_finds_borders_and_head_switching(tmp_path):
    src = am.make_vhs_capture(tmp_path / "vhs.mkv", width=176, height=144, border=8, band=6)
    crop = detect_crop(probe(src))
    assert (crop.width, crop.height, crop.x, crop.y) == (160, 136, 8, 2)
    res = transcode(src, tmp_path / "out.mkv", up(2), 2, VideoOptions(**LOSSLESS, ingest=IngestOptions(crop="auto")))
    with av.open(str(res.output)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (320, 272)
    clean = am.make_progressive_twin(tmp_path / "clean.mkv", frames=5)
    assert detect_crop(probe(clean)) is None


def test_crop_given_and_bad_crops(tmp_path):
    src = am.make_progressive_twin(tmp_path / "p.mkv", frames=4)
    res = transcode(src, tmp_path / "out.mkv", identity, 1,
                    VideoOptions(**LOSSLESS, ingest=IngestOptions(crop="100:80:10:6")))
    with av.open(str(res.output)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (100, 80)
    for bad in ("100x80", "1:1:0:0", "-4:3:0:0"):
        with pytest.raises(VsrError, match="crop"):
            IngestOptions(crop=bad)
    with pytest.raises(VsrError, match="does not fit"):
        transcode(src, tmp_path / "o2.mkv", identity, 1, VideoOptions(**LOSSLESS, ingest=IngestOptions(crop="128:96:4:0")))


def _rgb(path: Path, matrix: int) -> np.ndarray:
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        return f.reformat(format="rgb24", src_colorspace=matrix, src_color_range=1).to_ndarray()[8:-8, 8:-8]


@pytest.mark.parametrize("mode", ["auto", "keep"])
def test_sd_to_hd_becomes_bt709_unless_kept(tmp_path, mode):
    colour = (200, 60, 40)
    src = am.make_sd(tmp_path / "sd.mkv", width=64, height=48, sar="1", colour=colour)
    res = transcode(src, tmp_path / "hd.mkv", up(16), 16,  # 1024x768: HD
                    VideoOptions(**LOSSLESS, ingest=IngestOptions(colour=mode)))
    with av.open(str(res.output)) as c:
        cc = c.streams.video[0].codec_context
        tags = (int(cc.colorspace), int(cc.color_primaries), int(cc.color_trc))
    if mode == "keep":
        assert tags == (6, 6, 6)
    else:
        assert tags == (1, 1, 1) and any("BT.709" in n for n in res.notes)
        right, wrong = _rgb(res.output, 1), _rgb(res.output, 5)  # read as tagged / as if still BT.601
        err_right = np.abs(right.astype(int) - colour).mean()
        err_wrong = np.abs(wrong.astype(int) - colour).mean()
        assert err_right < 6 and err_wrong > 2 * err_right, (err_right, err_wrong)


@pytest.mark.parametrize("height", [480, 576])
def test_dvd_pixel_aspects_give_the_right_display_aspect(tmp_path, height):
    for sar in ("8/9", "10/11", "32/27", "16/15"):
        src = am.make_sd(tmp_path / "sd.mkv", height=height, sar=sar)
        want = Fraction(720) * Fraction(sar) / height
        square = transcode(src, tmp_path / "sq.mkv", identity, 1, VideoOptions(**LOSSLESS))
        with av.open(str(square.output)) as c:
            s = c.streams.video[0]
            assert s.sample_aspect_ratio in (None, 1) and s.height == height
            assert abs(s.width - 720 * Fraction(sar)) <= 2  # whole, even pixels
        assert abs(float(am.display_aspect(square.output) / want) - 1) < 0.005, sar
        kept = transcode(src, tmp_path / "keep.mkv", identity, 1, VideoOptions(**LOSSLESS, keep_sar=True))
        assert am.display_aspect(kept.output) == want, sar


def test_presets_load_strictly(tmp_path):
    from vsr.upscale import load_preset

    vhs, dvd = load_preset("vhs"), load_preset("dvd")
    assert vhs["ingest"]["double_rate"] is True and dvd["ingest"]["double_rate"] is False
    bad = tmp_path / "mine.yml"
    bad.write_text("ingest:\n  deinterlace: auto\n  crop_band: 8\n")
    with pytest.raises(VsrError, match="unknown key 'ingest.crop_band'"):
        load_preset(str(bad))
    with pytest.raises(VsrError, match="unknown preset"):
        load_preset("betamax")


def test_vhs_preset_through_the_command_line(interlaced, tmp_path, tiny_weights, capsys):
    import json

    from vsr.cli import main

    out = tmp_path / "restored.mkv"
    args = ["upscale", str(interlaced), "-o", str(out), "--preset", "vhs", "--model", str(tiny_weights),
            "--encoder-preset", "ultrafast", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 40 and any("field rate" in n for n in report["notes"])  # 25i -> 50p
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].height == 192
    bad = tmp_path / "bad.yml"
    bad.write_text("ingest:\n  deinterlace: auto\nencode:\n  speed: 3\n")
    assert main(["upscale", str(interlaced), "-o", str(tmp_path / "x.mkv"), "--preset", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'encode.speed'" in err[0]


def _fake_ffmpeg(tmp_path: Path, monkeypatch, *, code: int) -> Path:
    """Point the project at a stand-in ffmpeg that records its arguments and exits with `code`."""
    if os.name == "nt":
        pytest.skip("the stand-in ffmpeg is a shell script")
    exe, log = tmp_path / "fake-ffmpeg", tmp_path / "args.txt"
    exe.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{log}"\n'
                   'echo "[in#0 @ 0x1] Error during demuxing: Invalid data found when processing input" >&2\n'
                   f"exit {code}\n")
    exe.chmod(0o755)
    monkeypatch.setattr("vsr.video.ffmpeg.ffmpeg_exe", lambda: str(exe))
    return log


def test_detection_failure_is_one_line_naming_the_file(interlaced, tmp_path, monkeypatch):
    info = probe(interlaced)
    _fake_ffmpeg(tmp_path, monkeypatch, code=1)
    for detect, option in ((detect_interlace, "--deinterlace off"), (detect_crop, "--crop off")):
        with pytest.raises(VsrError) as err:
            detect(info)
        msg = str(err.value)
        assert "\n" not in msg and str(interlaced) in msg and option in msg and "Invalid data" in msg
    with pytest.raises(VsrError, match="woven.mkv"):
        transcode(interlaced, tmp_path / "out.mkv", identity, 1,
                  VideoOptions(**LOSSLESS, ingest=IngestOptions(deinterlace="auto")))


def test_detection_samples_from_a_tenth_into_long_files(interlaced, tmp_path, monkeypatch):
    info = replace(probe(interlaced), duration=120.0)
    log = _fake_ffmpeg(tmp_path, monkeypatch, code=0)
    assert detect_interlace(info) == (False, "tff", "no verdict")
    args = log.read_text().splitlines()
    # the seek is an input option: before -i, so ffmpeg seeks the input rather than decoding up to it
    at = args.index("-i")
    assert args[at - 2:at + 2] == ["-ss", "12.000", "-i", str(interlaced)]
    assert "-noautorotate" in args[:at]  # the detections see the stored picture, as the decoder gives it
    assert args[args.index("-vf") + 1] == "idet" and args[args.index("-frames:v") + 1] == "240"
    assert args[args.index("-map") + 1] == f"0:{info.video_index}"
