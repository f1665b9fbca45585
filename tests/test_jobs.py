"""One job over several files or devices: outputs never collide with each other or with an input, devices
share a video only when they compute alike, and a skipped output's leftovers respect a running job."""
import json
import sys
from pathlib import Path

import av
import numpy as np

from vsr.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402

FAST = ["--codec", "libx264", "--encoder-preset", "ultrafast"]


def test_one_video_is_spread_only_over_devices_that_compute_alike(tmp_path, tiny_weights, capsys, monkeypatch):
    """The second device's engine tiles where the first does not: its batches would differ, so the video
    stays on the first and comes out as on one device."""
    import vsr.job
    from vsr.engine.upscaler import Session, Upscaler

    made = []

    def engine(desc, **kw):
        made.append(Upscaler(desc, **{**kw, "tile": 16} if made else kw))
        return made[-1]

    monkeypatch.setattr(vsr.job, "Upscaler", engine)
    used = set()
    true_call = Session.upscale_array
    monkeypatch.setattr(Session, "upscale_array", lambda self, arr, **kw: used.add(id(self.engine)) or
                        true_call(self, arr, **kw))
    src = media.make_mp4(tmp_path / "tape.mp4", width=40, height=24, frames=8, audio=False)
    frames = {}
    for name, extra in (("one", []), ("two", ["--devices", "cpu,cpu"])):
        made.clear()
        used.clear()
        out = tmp_path / f"{name}.mkv"
        assert main(["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), "--codec", "ffv1",
                     "--batch", "1", "--quiet", "--json", *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        assert used == {id(made[0])}
        with av.open(str(out)) as c:
            frames[name] = [f.to_ndarray().tobytes() for f in c.decode(video=0)]
    assert frames["one"] == frames["two"] and len(frames["one"]) == 8
    assert any("not spread over cpu" in n for n in report["notes"]), report["notes"]


def _avi(path: Path, *, width: int, height: int, frames: int = 6) -> Path:
    from vsr.video.ffmpeg import run_ffmpeg

    vf = media.video_filter(width=width, height=height, frames=frames, pix_fmt="yuv420p")
    run_ffmpeg(["-f", "lavfi", "-i", vf, "-c:v", "mpeg4", str(path)], what="making a test avi")
    return path


def _size(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as c:
        return c.streams.video[0].width, c.streams.video[0].height, sum(1 for _ in c.decode(video=0))


def test_a_folder_with_tape_avi_and_tape_mkv_restores_both(tmp_path, tiny_weights, capsys):
    """AVI is written as MKV, so both files would write tape.mkv: the MKV keeps its name, the AVI's output is
    renamed, and a second run finds both finished."""
    src = tmp_path / "tapes"
    src.mkdir()
    _avi(src / "tape.avi", width=32, height=24)
    media.make_mp4(src / "tape.mp4", width=40, height=24, frames=6, audio=False)
    (src / "tape.mp4").rename(src / "tape.mkv")  # an H.264 stream in an MP4 file named .mkv: probed, not named
    media.make_mp4(src / "clip.mp4", width=36, height=24, frames=6, audio=False)
    _avi(src / "clip.avi", width=28, height=24)
    out = tmp_path / "out"
    args = ["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), "--quiet", "--json", *FAST]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    # clip.mp4 keeps its name, and the MKV it would fall back to is its own too
    names = ["clip.mp4", "clip_avi.mkv", "tape.mkv", "tape_avi.mkv"]
    assert sorted(Path(p).name for p in report["outputs"]) == names
    assert _size(out / "tape.mkv") == (80, 48, 6) and _size(out / "tape_avi.mkv") == (64, 48, 6)
    assert _size(out / "clip_avi.mkv") == (56, 48, 6) and _size(out / "clip.mp4") == (72, 48, 6)
    assert any(n.startswith("tape.avi: output named tape_avi.mkv") for n in report["notes"]), report["notes"]
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in again["skipped"]) == names


def test_an_output_that_could_fall_back_onto_its_input_is_refused(tmp_path, tiny_weights, capsys):
    src = media.make_mp4(tmp_path / "clip.mp4", width=32, height=24, frames=4, audio=False).rename(
        tmp_path / "clip.mkv")
    before = src.read_bytes()
    for dst in ("clip.mp4", "clip.avi"):  # MP4 falls back to MKV if it refuses a stream; AVI is always MKV
        assert main(["upscale", str(src), "-o", str(tmp_path / dst), "--model", str(tiny_weights), "--quiet"]) == 1
        err = capsys.readouterr().err.strip()
        assert "which is the input; choose another -o name" in err and len(err.splitlines()) == 1, err
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv", "tiny-x2.safetensors"]


def test_a_skipped_output_leaves_the_work_of_a_run_that_writes_it(tmp_path, tiny_weights, capsys):
    """A finished output whose work folder is left over: the folder goes, unless a run writing the output anew
    (--overwrite) holds its lock: that folder is its work."""
    from vsr.video.resume import output_lock, work_dir_for

    src = media.make_mp4(tmp_path / "clip.mp4", width=32, height=24, frames=4, audio=False)
    out = tmp_path / "out.mkv"
    args = ["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), "--quiet", "--json", *FAST]
    assert main(args) == 0
    capsys.readouterr()
    work = work_dir_for(out)
    work.mkdir()
    (work / "segment_00000.mkv").write_bytes(b"another run's work")
    with output_lock(out):  # as another run, with --overwrite, would
        assert main(args) == 0
        assert json.loads(capsys.readouterr().out)["skipped"] == [str(out)]
        assert (work / "segment_00000.mkv").read_bytes() == b"another run's work"
    assert main(args) == 0  # nobody writes it now: a leftover, removed
    assert not work.exists()


def test_one_file_through_the_job_module_reports_its_progress(tmp_path, tiny_weights):
    """vsr.job alone (what a job queue calls): a video's frames reported as they are encoded, an image
    once, a missing input a failed row; the reports merge as a folder run's do."""
    from vsr.job import Report, UpscaleOptions, restore_file
    from vsr.video import VideoOptions

    src = media.make_mp4(tmp_path / "tape.mp4", width=40, height=24, frames=6, audio=False)
    opts = UpscaleOptions(model=str(tiny_weights), device="cpu", quiet=True, video=VideoOptions(codec="ffv1"))
    seen: list[tuple[int, int | None]] = []
    video = restore_file(src, tmp_path / "out.mkv", opts, progress=lambda done, total: seen.append((done, total)))
    assert video.outputs == [str(tmp_path / "out.mkv")] and video.frames == 6 and not video.failed
    assert seen[0] == (0, 6) and seen[-1] == (6, 6), seen
    assert video.model_seconds > 0
    assert _size(tmp_path / "out.mkv")[2] == 6

    images = []
    image_src = tmp_path / "still.png"
    import vsr.images

    vsr.images.write_image(image_src, np.zeros((12, 16, 3), np.uint8))
    still = restore_file(image_src, tmp_path / "still_x.png", opts, progress=lambda d, t: images.append((d, t)))
    assert images == [(1, 1)] and still.frames == 1
    missing = restore_file(tmp_path / "gone.mp4", tmp_path / "gone_x.mp4", opts)
    assert "does not exist" in missing.failed[str(tmp_path / "gone.mp4")]

    total = Report()
    for name, part in (("a", video), ("b", still), ("c", missing)):
        total.merge(part, name)
    assert total.frames == 7 and len(total.outputs) == 2 and list(total.failed) == ["c"]
    assert [row[:2] for row in total.rows] == [("a", "done"), ("b", "done"), ("c", "failed")]


def test_a_network_on_the_cpu_gets_a_quicker_x264_preset_unless_one_is_given(tmp_path, tiny_weights):
    """The encoder shares the cores with a network on the CPU: x264 runs veryfast there by default (its
    options in the stream say so: one reference frame, subme 2) through the job module and through `vsr upscale`,
    a preset the user names stays."""
    from vsr.job import Job, UpscaleOptions, restore_file
    from vsr.video import VideoOptions

    def job(**video) -> Job:
        return Job(UpscaleOptions(model=str(tiny_weights), device="cpu", quiet=True, video=VideoOptions(**video)))

    assert job().video_options.preset == "veryfast"
    assert job(preset="slow").video_options.preset == "slow"
    assert job(encoder_options={"preset": "medium"}).video_options.preset is None
    assert job(codec="libx265").video_options.preset is None  # its own default
    src = media.make_mp4(tmp_path / "tape.mp4", width=40, height=24, frames=4, audio=False)
    for name, video in (("default", {}), ("slow", {"preset": "slow"})):  # the job module alone
        opts = UpscaleOptions(model=str(tiny_weights), device="cpu", quiet=True, video=VideoOptions(**video))
        assert not restore_file(src, tmp_path / f"{name}.mkv", opts).failed
    assert main(["upscale", str(src), "-o", str(tmp_path / "cli.mkv"), "--model", str(tiny_weights), "--quiet"]) == 0
    assert b" ref=1 " in (tmp_path / "cli.mkv").read_bytes()
    default, slow = (tmp_path / "default.mkv").read_bytes(), (tmp_path / "slow.mkv").read_bytes()
    assert b" ref=1 " in default and b" subme=2 " in default
    assert b" ref=5 " in slow and b" subme=8 " in slow
