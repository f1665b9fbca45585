"""`vsr upscale` on videos and on folders that mix videos and images."""
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np

from vsr import images
from vsr.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402

FAST = ["--encoder-preset", "ultrafast", "--json"]


def frame_pts(path):
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


def test_video_through_the_network_keeps_every_stream_and_timestamp(tmp_path, tiny_weights, capsys):
    src = media.make_rich_clip(tmp_path / "clip.mkv")
    out = tmp_path / "out.mkv"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), *FAST]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == [str(out)] and report["decode_errors"] == 0
    assert report["wall_seconds"] >= report["model_seconds"] > 0
    with av.open(str(src)) as a, av.open(str(out)) as b:
        assert [s.type for s in a.streams] == [s.type for s in b.streams]
        v = b.streams.video[0]
        # x2, anamorphic 4:3 pixels made square at the right display size (even, for 4:2:0)
        assert v.codec_context.height == 98 and abs(v.codec_context.width - 65 * 4 / 3 * 2) <= 1
    assert report["frames"] == len(frame_pts(src)) == len(frame_pts(out))
    assert [round(float(t), 3) for t in frame_pts(src)] == [round(float(t), 3) for t in frame_pts(out)]


def test_folder_of_videos_and_images_is_resumable(tmp_path, tiny_weights, capsys):
    src = tmp_path / "tapes"
    (src / "day1").mkdir(parents=True)
    media.make_mp4(src / "day1" / "a.mp4")
    media.make_mp4(src / "b.avi", frames=10)  # AVI output is written as MKV
    images.write_image(src / "still.png", (np.random.rand(10, 12, 3) * 255).astype(np.uint8))
    out = tmp_path / "restored"
    args = ["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), *FAST]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["outputs"]) == sorted(str(out / p) for p in ("day1/a.mp4", "b.mkv", "still.png"))
    assert report["frames"] == 20 + 10 + 1
    assert main(args) == 0  # everything exists: nothing is redone, not even the AVI written as MKV
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == [] and len(report["skipped"]) == 3 and report["frames"] == 0


def test_bad_video_inputs_give_one_line_errors_and_leave_nothing(tmp_path, tiny_weights):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n" * 20)
    media.make_audio_only(bad / "sound.m4a")
    (bad / "sound.m4a").rename(bad / "sound.mp4")
    media.make_truncated_mp4(bad / "cut.mp4")
    (bad / "nomedia").mkdir()
    (bad / "nomedia" / "readme.txt").write_text("no media here")
    before = sorted(os.listdir(bad))
    for name, message in [("empty.mp4", "empty"), ("text.mp4", ""), ("sound.mp4", "no video"),
                          ("cut.mp4", "truncated"), ("nomedia", "holds no images or videos")]:
        r = subprocess.run([sys.executable, "-m", "vsr", "upscale", name, "-o", "out.mkv", "--model",
                            str(tiny_weights), "--quiet"], capture_output=True, text=True, cwd=bad)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, (name, r.stderr)
        assert message in lines[0], (name, lines[0])
        assert sorted(os.listdir(bad)) == before, name


def test_demo_restores_its_generated_clip(tmp_path, capsys):
    from conftest import tiny
    from vsr import weights

    model = tmp_path / "tiny-x4.safetensors"
    weights.save(tiny("compact", nf=8, num_conv=1, upscale=4), model)
    assert main(["demo", "-o", str(tmp_path / "demo"), "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "30 frames 512x384 (video h264, audio aac)" in out and "PSNR against the clean original" in out


def test_output_is_planned_once_and_its_fallback_counts_as_done(tmp_path, tiny_weights, capsys, monkeypatch):
    """Each video is probed and planned once; an output the Matroska fallback wrote is found again."""
    tc = sys.modules["vsr.video.transcode"]  # the module (vsr.video.transcode is also the function)
    src = media.make_mp4(tmp_path / "clip.mp4", frames=6)
    probes = []
    real = tc.probe
    monkeypatch.setattr(tc, "probe", lambda p: probes.append(p) or real(p))
    out = tmp_path / "out.mp4"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), *FAST]) == 0
    assert len(probes) == 1 and out.is_file()
    out.rename(out.with_suffix(".mkv"))  # as if mp4 had refused a stream while muxing
    capsys.readouterr()
    assert main(["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), *FAST]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == [str(out.with_suffix(".mkv"))] and not out.exists()


def test_files_spread_over_several_devices_come_out_as_on_one(tmp_path, tiny_weights, capsys):
    src = tmp_path / "tapes"
    src.mkdir()
    for i in range(3):
        media.make_mp4(src / f"clip{i}.mp4", width=32 + 4 * i, height=24, frames=8, audio=False)
        images.write_image(src / f"still{i}.png", np.full((12, 10 + i, 3), 40 * i, np.uint8))
    opts = ["--model", str(tiny_weights), "--codec", "ffv1", "--quiet", "--json"]
    outs = {}
    for name, extra in (("one", []), ("two", ["--devices", "cpu,cpu"])):
        assert main(["upscale", str(src), "-o", str(tmp_path / name), *opts, *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        assert len(report["outputs"]) == 6 and report["frames"] == 3 * 8 + 3
        outs[name] = {p.name: (images.read_image(p).tobytes() if p.suffix == ".png" else
                               [f.to_ndarray().tobytes() for f in av.open(str(p)).decode(video=0)])
                      for p in (tmp_path / name).iterdir()}
    assert outs["one"] == outs["two"] and len(outs["one"]) == 6


def test_one_video_spread_over_several_devices_comes_out_as_on_one(tmp_path, tiny_weights, capsys, monkeypatch):
    from vsr.engine.upscaler import Session

    src = tmp_path / "tape.mp4"
    media.make_mp4(src, width=40, height=24, frames=12, audio=True)
    engines = set()
    true_call = Session.upscale_array

    def counted(self, arr, **kw):
        engines.add(id(self.engine))
        return true_call(self, arr, **kw)

    monkeypatch.setattr(Session, "upscale_array", counted)
    frames = {}
    for name, extra in (("one", []), ("two", ["--devices", "cpu,cpu"])):
        engines.clear()
        out = tmp_path / f"{name}.mkv"
        assert main(["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), "--codec", "ffv1",
                     "--batch", "1", "--quiet", "--json", *extra]) == 0
        assert json.loads(capsys.readouterr().out)["frames"] == 12
        assert len(engines) == (1 if name == "one" else 2)  # both devices took batches of the one video
        with av.open(str(out)) as c:
            assert c.streams.audio
            frames[name] = [(f.pts, f.to_ndarray().tobytes()) for f in c.decode(video=0)]
    assert frames["one"] == frames["two"] and len(frames["one"]) == 12  # in order, timestamps kept
