import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vsr import images, weights
from vsr.cli import main



def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vsr", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def rgb(h=12, w=16, c=3, dtype=np.uint8, seed=0):
    peak = np.iinfo(dtype).max
    return (np.random.RandomState(seed).rand(h, w, c) * peak).astype(dtype)


def test_bad_inputs_give_one_line_errors_and_write_nothing(tmp_path, tiny_weights):
    good = tmp_path / "good.png"
    images.write_image(good, rgb())
    (tmp_path / "text.png").write_text("not an image\n")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "empty.png").write_bytes(b"")
    other = tmp_path / "other.safetensors"
    weights.save({"encoder.weight": torch.zeros(2, 2)}, other)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03.")
    cases = [
        (["text.png", "--model", tiny_weights], "not an image"),
        (["cut.png", "--model", tiny_weights], "truncated or corrupt"),
        (["empty.png", "--model", tiny_weights], "empty"),
        (["good.png", "--model", "no-such-model"], "unknown model"),
        (["good.png", "--model", other], "unknown architecture"),
        (["good.png", "--model", evil], "refusing to load"),
        (["good.png", "--model", tiny_weights, "-o", "good.png"], "is the input"),
        (["missing.png", "--model", tiny_weights], "does not exist"),
    ]
    before = sorted(os.listdir(tmp_path))
    for args, message in cases:
        r = run_cli("upscale", *args, *([] if "-o" in args else ["-o", "out.png"]), cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0, args
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, (args, r.stderr)
        assert sorted(os.listdir(tmp_path)) == before, args  # nothing written, nothing partial left


@pytest.mark.parametrize("suffix,shape,dtype", [
    (".png", (12, 16, 3), np.uint8), (".png", (12, 16, 3), np.uint16), (".png", (12, 16), np.uint8),
    (".png", (12, 16, 4), np.uint8), (".png", (12, 16), np.uint16), (".jpg", (12, 16, 3), np.uint8),
    (".webp", (12, 16, 3), np.uint8), (".tif", (12, 16, 3), np.uint16), (".tif", (12, 16, 4), np.uint16),
])
def test_formats_depths_grey_and_alpha(tmp_path, tiny_weights, suffix, shape, dtype):
    img = rgb(*shape[:2], c=shape[2] if len(shape) == 3 else 1, dtype=dtype)
    img = img[..., 0] if len(shape) == 2 else img
    if len(shape) == 3 and shape[2] == 4:
        img[..., 3] = 0  # transparent left half: alpha is upscaled on its own, not from the colours
        img[:, 8:, 3] = np.iinfo(dtype).max
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    images.write_image(src, img)
    assert main(["upscale", str(src), "-o", str(dst), "--model", str(tiny_weights), "--quiet"]) == 0
    out = images.read_image(dst)
    assert out.shape[:2] == (24, 32) and out.dtype == dtype and out.ndim == img.ndim
    if out.ndim == 3:
        assert out.shape[2] == img.shape[2]
    if len(shape) == 3 and shape[2] == 4:
        peak = int(np.iinfo(dtype).max)
        assert out[:, :12, 3].max() < peak * 0.15 and out[:, 20:, 3].min() > peak * 0.8


def test_scale_other_than_the_models_and_json(tmp_path, tiny_weights, capsys):
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    images.write_image(src, rgb(20, 30))
    assert main(["upscale", str(src), "-o", str(dst), "--model", str(tiny_weights), "--scale", "1.5",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == [str(dst)] and report["frames"] == 1
    assert report["wall_seconds"] >= report["model_seconds"] > 0
    assert images.read_image(dst).shape == (30, 45, 3)


def test_folder_mirrors_skips_and_continues_past_failures(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    images.write_image(src / "one.png", rgb())
    images.write_image(src / "a" / "b" / "two.jpg", rgb(seed=1))
    (src / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    args = ["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), "--json"]
    assert main(args) == 1  # one file failed
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["outputs"]) == sorted([str(out / "one.png"), str(out / "a" / "b" / "two.jpg")])
    assert list(report["failed"]) == [str(src / "a" / "broken.png")]
    assert not (out / "notes.txt").exists() and not (out / "a" / "broken.png").exists()
    mtime = (out / "one.png").stat().st_mtime_ns
    (src / "a" / "broken.png").unlink()
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == [] and len(report["skipped"]) == 2
    assert (out / "one.png").stat().st_mtime_ns == mtime
    assert main(args + ["--overwrite"]) == 0
    assert len(json.loads(capsys.readouterr().out)["outputs"]) == 2


def test_empty_folder_is_an_error(tmp_path, tiny_weights, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["upscale", str(tmp_path / "empty"), "--model", str(tiny_weights)]) == 1
    assert "holds no images or videos" in capsys.readouterr().err


def test_models_lists_the_named_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("realesrgan-x4plus", "realesr-animevideov3", "realesr-animevideov3-x2", "esrgan"):
        assert name in out
    assert "16.70M" in out and "0.62M" in out and "BSD-3-Clause" in out


def test_pickled_code_is_refused_in_one_line_without_library_warnings(tmp_path, tiny_weights):
    import pickle

    good = tmp_path / "good.png"
    images.write_image(good, rgb())
    for protocol in (2, 4, 5):  # torch warns about protocols above 2 before it refuses the file
        evil = tmp_path / f"evil{protocol}.pth"
        evil.write_bytes(pickle.dumps({"w": _RunsCode()}, protocol=protocol))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        r = subprocess.run([sys.executable, "-m", "vsr", "upscale", str(good), "-o", str(tmp_path / "out.png"),
                            "--model", str(evil)], capture_output=True, text=True, env=env)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "refusing to load" in lines[0], r.stderr
        assert "never run" not in r.stdout
    assert not (tmp_path / "out.png").exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_library_warnings_reach_stderr_only_with_debug(monkeypatch):
    import warnings

    from vsr import cli

    def noisy(args):
        warnings.warn("a library's advice to developers", UserWarning)
        return 0

    monkeypatch.setattr(cli, "cmd_models", noisy)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["models"]) == 0
        assert not seen
        assert main(["--debug", "models"]) == 0
        assert [str(w.message) for w in seen] == ["a library's advice to developers"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    sys.path.insert(0, os.path.dirname(__file__))
    import media

    return media.make_mp4(tmp_path_factory.mktemp("clip") / "clip.mkv", frames=3, audio=False)


@pytest.mark.parametrize("args,message", [
    (["--crf", "99"], "--crf 99 is out of range for libx264: expected 0 to 51"),
    (["--crf", "-1", "--codec", "libx265"], "--crf -1 is out of range for libx265: expected 0 to 51"),
    (["--crf", "64", "--codec", "libsvtav1"], "--crf 64 is out of range for libsvtav1: expected 0 to 63"),
    (["--crf", "10", "--codec", "ffv1"], "ffv1 takes no --crf (it is lossless)"),
    (["--crf", "10", "--codec", "prores_ks"], "prores_ks takes no --crf"),
    (["--pix-fmt", "rgb24"], "libx264 cannot encode pixel format 'rgb24'; expected one of: yuv420p"),
    (["--pix-fmt", "yuv420p", "--codec", "prores_ks"], "prores_ks cannot encode pixel format 'yuv420p'"),
    (["--codec", "libx263"], "video encoder 'libx263' is not available"),
    (["-x", "crf=99"], "-x crf=99 is out of range for libx264: expected 0 to 51"),
    (["-x", "crf=3", "--codec", "ffv1"], "ffv1 takes no -x crf (it is lossless)"),
    (["--encoder-preset", "slow", "--codec", "ffv1"], "ffv1 encoder has no presets; leave out --encoder-preset"),
    (["--encoder-preset", "bogus"], "the libx264 encoder refuses its options (crf=16 preset=bogus)"),
    (["-x", "tnue=grain"], "the libx264 encoder has no option 'tnue'"),
])
def test_encoder_options_are_checked_before_any_work(tmp_path, clip, capsys, args, message):
    import av

    codec = args[args.index("--codec") + 1] if "--codec" in args else "libx264"
    if codec in ("libx265", "libsvtav1", "prores_ks") and codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this PyAV build")
    out = tmp_path / "out.mkv"
    # an unknown model too: the encoder options are checked first, before the model is even looked for
    assert main(["upscale", str(clip), "-o", str(out), "--model", "no-such-model", "--quiet", *args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert os.listdir(tmp_path) == []  # nothing at the output path, no work folder


def test_a_presets_encoder_settings_stay_with_its_codec(tmp_path, clip, tiny_weights, capsys):
    import av

    out = tmp_path / "out.mkv"  # vhs: libx264 crf 16, tune grain; with ffv1 those do not apply
    assert main(["upscale", str(clip), "-o", str(out), "--preset", "vhs", "--codec", "ffv1", "--deinterlace", "off",
                 "--model", str(tiny_weights), "--quiet"]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "ffv1"


def test_user_errors_are_not_value_errors():
    """A generic `except ValueError` around library code (number parsing, JSON) must never catch a user
    error and re-word it: VsrError is its own kind."""
    from vsr.errors import VsrError

    assert not issubclass(VsrError, ValueError)
    try:
        raise VsrError("the user's own words")
    except ValueError:
        pytest.fail("except ValueError caught a VsrError")
    except VsrError as e:
        assert str(e) == "the user's own words"
