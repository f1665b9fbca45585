"""Temporal metrics (tOF, warping error) and ``vsr compare`` on tiny generated clips."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vsr import compare, metrics
from vsr.errors import VsrError
from vsr.images import read_image, write_image


@pytest.fixture(autouse=True)
def _one_opencv_thread():
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


def _texture(seed: int, h: int, w: int, blur: float = 2.0) -> np.ndarray:
    """Smooth random colour texture over the full 0..255 range: optical flow can follow it."""
    t = cv2.GaussianBlur((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8), (0, 0), blur)
    return cv2.normalize(t, None, 0, 255, cv2.NORM_MINMAX)


def _pan(n: int = 6, *, size: int = 64, step: int = 2, jitter: int = 0, seed: int = 0) -> list[np.ndarray]:
    """A camera panning right over one image by `step` pixels a frame, shaken by up to `jitter` pixels."""
    big = _texture(seed, size + 40, size + n * step + 40)
    shake = np.random.default_rng(seed + 1).integers(-jitter, jitter + 1, (n, 2))
    shake[0] = 0
    return [np.ascontiguousarray(big[20 + dy:20 + dy + size, 20 + t * step + dx:20 + t * step + dx + size])
            for t, (dy, dx) in enumerate(shake)]


def _noisy(frames: list[np.ndarray], amplitude: int, seed: int = 5) -> list[np.ndarray]:
    """Independent noise in every frame: flicker that no motion explains."""
    rng = np.random.default_rng(seed)
    return [np.clip(f.astype(int) + rng.integers(-amplitude, amplitude + 1, f.shape), 0, 255).astype(np.uint8)
            for f in frames]


def _write_video(path: Path, frames: list[np.ndarray]) -> Path:
    """A lossless RGB clip (FFV1 in Matroska), so decoded frames equal the arrays."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def _write_folder(path: Path, frames: list[np.ndarray]) -> Path:
    for i, f in enumerate(frames):
        write_image(path / f"frame{i}.png", f)  # unpadded numbers: natural order must put 10 after 9
    return path


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    compare.add_arguments(p)
    return p.parse_args(list(argv))


# --- tOF -------------------------------------------------------------------------------------------------

def test_tof_zero_for_identical_motion_and_grows_with_jitter():
    truth = _pan(6)
    assert metrics.tof_per_frame(truth, truth) == [0.0] * 5
    # the same pan re-rendered from the same image: the same motion, whatever the frames' own content
    assert metrics.tof(_pan(6), truth) == 0.0
    small, large = metrics.tof(_pan(6, jitter=1), truth), metrics.tof(_pan(6, jitter=3), truth)
    assert 1.0 < small < large  # pixels of wrong motion, averaged over the crop
    per_frame = metrics.tof_per_frame(_pan(6, jitter=3), truth)
    assert len(per_frame) == 5 and np.mean(per_frame) == pytest.approx(large)


def test_tof_uses_tecogan_crop_and_needs_48_pixels():
    flow = np.zeros((100, 70, 2), np.float32)
    flow[:8] = 50  # the top border: TecoGAN's crop leaves it out
    assert metrics.flow_distance(flow, np.zeros_like(flow)) == 0.0
    assert metrics._tecogan_crop(flow).shape[:2] == (64, 32)
    tiny = [f[:40, :40] for f in _pan(3)]
    with pytest.raises(ValueError, match="at least 48x48"):
        metrics.tof(tiny, tiny)


# --- warping error ---------------------------------------------------------------------------------------

def test_warping_error_zero_for_translation_and_grows_with_flicker():
    clean = _pan(6)
    assert max(metrics.warping_error_per_frame(clean)) < 2e-6
    lowres = [cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in clean]
    assert metrics.warping_error(clean, guide=lowres) < 2e-6  # motion of the input, upscaled x2

    errors = [metrics.warping_error(_noisy(clean, a), guide=clean) for a in (4, 8, 16)]
    assert 1e-4 < errors[0] < errors[1] < errors[2]
    # uniform noise of +-a in two frames: a mean squared difference of 2 a (a + 1) / 3 / 255^2
    assert errors[1] == pytest.approx(2 * 8 * 9 / 3 / 255 ** 2, rel=0.1)
    own = metrics.warping_error(_noisy(clean, 8))  # the frames' own motion: also sees it
    assert own > 50 * metrics.warping_error(clean)

    flicker = [np.clip(f.astype(int) + (6 if t % 2 else -6), 0, 255).astype(np.uint8) for t, f in enumerate(clean)]
    assert metrics.warping_error(flicker, guide=clean) > 100 * metrics.warping_error(clean, guide=clean)


def test_occlusion_mask_leaves_out_uncovered_and_outside_pixels():
    pan = _pan(2, step=3)
    m = metrics.estimate_motion(pan[0], pan[1])
    assert m.flow[..., 0].mean() == pytest.approx(3, abs=0.1)  # frame 1 at x shows frame 0 at x + 3
    assert not m.mask[:, -2:].any() and m.mask[:, :-8].mean() > 0.97  # the new columns came from outside

    bg, square = _texture(1, 96, 96), _texture(2, 32, 32)
    frames = [bg.copy(), bg.copy()]
    frames[0][32:64, 10:42], frames[1][32:64, 16:48] = square, square  # moves 6 pixels right
    m = metrics.estimate_motion(*frames)
    uncovered = ~m.mask[34:62, 10:16]
    assert uncovered.mean() > 0.3 and (~m.mask[:, 60:]).mean() < 0.05
    everything = metrics.Motion(flow=m.flow, mask=np.ones_like(m.mask))
    assert metrics.warping_error_pair(*frames, m) < 0.8 * metrics.warping_error_pair(*frames, everything)


# --- vsr compare -----------------------------------------------------------------------------------------

def test_compare_videos_writes_picture_and_plot_with_the_metrics(tmp_path, capsys):
    truth = _pan(7)
    restored = _noisy(truth, 2)
    flickery = _noisy(truth, 12, seed=9)
    a = _write_video(tmp_path / "a.mkv", restored)
    b = _write_video(tmp_path / "b.mkv", flickery)
    r = _write_video(tmp_path / "r.mkv", truth)
    out = tmp_path / "report"
    assert compare.run(_args(str(a), str(b), "--reference", str(r), "-o", str(out), "--json")) == 0
    s = json.loads(capsys.readouterr().out)

    assert s["frames"] == 7 and s["warping_flow"] == "reference" and s["picture_frame"] == 3
    picture, plot = read_image(Path(s["picture"])), read_image(Path(s["plot"]))
    assert picture.shape[:2] == (64 + 22, 3 * 64 + 2 * 4)
    assert np.array_equal(picture[22:, 68:132], flickery[3])  # B, the middle frame, 1:1
    assert plot.shape[0] == 4 * 190 and plot.std() > 0
    for name, frames in (("A", restored), ("B", flickery)):
        c = s["clips"][name]
        assert c["psnr_y"]["per_frame"] == pytest.approx([metrics.psnr(f, t) for f, t in zip(frames, truth)])
        assert c["ssim_y"]["mean"] == pytest.approx(np.mean([metrics.ssim(f, t) for f, t in zip(frames, truth)]))
        assert c["tof"]["per_frame"] == pytest.approx(metrics.tof_per_frame(frames, truth))
        assert c["warping_error"]["per_frame"] == pytest.approx(metrics.warping_error_per_frame(frames, truth))
        assert len(c["tof"]["per_frame"]) == 6 and c["tof"]["min"] <= c["tof"]["mean"] <= c["tof"]["max"]
    A, B = s["clips"]["A"], s["clips"]["B"]
    assert A["psnr_y"]["mean"] > B["psnr_y"]["mean"] and A["tof"]["mean"] < B["tof"]["mean"]
    assert A["warping_error"]["mean"] < B["warping_error"]["mean"] / 10
    assert s["clips"]["reference"]["warping_error"]["mean"] < 2e-6


def test_compare_folders_with_input_prints_the_table(tmp_path, capsys):
    clean = _pan(11)  # 11 frames: frame10.png must come after frame9.png
    lowres = [cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in clean]
    a = _write_folder(tmp_path / "a", clean)
    b = _write_folder(tmp_path / "b", _noisy(clean, 8))
    lr = _write_folder(tmp_path / "lr", lowres)
    assert compare.run(_args(str(a), str(b), "--input", str(lr), "-o", str(tmp_path / "o"))) == 0
    text = capsys.readouterr().out
    assert "warping error" in text and "PSNR" not in text and "the input's motion" in text
    assert (tmp_path / "o" / compare.PICTURE).is_file() and (tmp_path / "o" / compare.PLOT).is_file()

    c = compare.compare(a, b, lowres=lr, max_frames=5)
    assert c.frames == 5 and c.flow_from == "input" and set(c.values["A"]) == {"warping_error"}
    noisy = [read_image(b / f"frame{i}.png") for i in range(5)]
    assert c.values["B"]["warping_error"] == pytest.approx(metrics.warping_error_per_frame(noisy, lowres[:5]))
    mean = {k: compare.stats(c.values[k]["warping_error"])["mean"] for k in ("A", "B")}
    assert mean["B"] > 50 * mean["A"]
    row = next(line for line in compare.table(c).splitlines() if line.startswith("warping error"))
    assert row.split()[-1].startswith("+")  # B's is higher than A's



def test_input_against_its_output_is_enlarged_plainly(tmp_path, capsys):
    """A smaller than B (the input and its upscale): A is enlarged with bicubic to B's size and the warping
    error follows A's own motion, as --input would make it."""
    clean = _pan(6)
    lowres = [cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in clean]
    lr = _write_folder(tmp_path / "lr", lowres)
    b = _write_folder(tmp_path / "b", clean)
    c = compare.compare(lr, b)
    assert c.enlarged and c.flow_from == "input" and c.frames == 6
    enlarged = [cv2.resize(f, (64, 64), interpolation=cv2.INTER_CUBIC) for f in lowres]
    assert c.values["A"]["warping_error"] == pytest.approx(metrics.warping_error_per_frame(enlarged, lowres))
    assert c.values["B"]["warping_error"] == pytest.approx(metrics.warping_error_per_frame(clean, lowres))
    assert np.array_equal(c.shown["A"], enlarged[c.shown_index]) and compare.side_by_side(c).shape[1] == 2 * 64 + 4
    assert compare.run(_args(str(lr), str(b), "-o", str(tmp_path / "o"), "--json")) == 0
    assert json.loads(capsys.readouterr().out)["a_enlarged"] is True
    assert "lr, bicubic" in compare.table(c)
    with pytest.raises(VsrError, match="same size"):  # larger A, or a reference: sizes must match
        compare.compare(b, lr)

def _bad(tmp: Path, case: str) -> argparse.Namespace:
    pan = _pan(5)
    a = _write_folder(tmp / "a", pan)
    if case == "missing":
        return _args(str(a), str(tmp / "nope.mkv"))
    if case == "empty folder":
        (tmp / "empty").mkdir()
        return _args(str(a), str(tmp / "empty"))
    if case == "not a video":
        (tmp / "notes.txt").write_text("hello")
        return _args(str(a), str(tmp / "notes.txt"))
    if case == "frame counts":
        return _args(str(a), str(_write_folder(tmp / "b", _pan(6))))
    if case == "video shorter":
        return _args(str(_write_video(tmp / "a.mkv", pan)), str(_write_video(tmp / "b.mkv", pan[:4])))
    if case == "sizes":
        return _args(str(a), str(_write_folder(tmp / "b", [f[:48, :48] for f in pan])))
    if case == "reference size":
        return _args(str(a), str(a), "--reference", str(_write_folder(tmp / "r", _pan(5, size=48))))
    if case == "too small for tOF":
        small = _write_folder(tmp / "s", [f[:40, :40] for f in pan])
        return _args(str(small), str(small), "--reference", str(small))
    if case == "one frame":
        return _args(str(a), str(a), "--max-frames", "1")
    if case == "output is a file":
        (tmp / "report").write_text("")
        return _args(str(a), str(a), "-o", str(tmp / "report"))
    raise AssertionError(case)


@pytest.mark.parametrize("case, says", [
    ("missing", "does not exist"), ("empty folder", "holds no images"), ("not a video", "cannot be read"),
    ("frame counts", "--max-frames 5"), ("video shorter", "--max-frames 4"), ("sizes", "same size"),
    ("reference size", "ground truth"), ("too small for tOF", "48x48"), ("one frame", "at least 2"),
    ("output is a file", "give a folder")])
def test_bad_inputs_say_one_line(tmp_path, case, says):
    args = _bad(tmp_path, case)
    if case != "output is a file":
        args.output = tmp_path / "out"
    with pytest.raises(VsrError) as e:
        compare.run(args)
    assert says in str(e.value) and "\n" not in str(e.value)
