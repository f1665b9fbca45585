"""Line jitter: offsets put on the lines of a moving picture (vsr.train.tape.line_jitter) are measured against
the neighbouring frames and undone; clean footage, slanted edges and a moving camera included, is not taken
for jitter."""
from __future__ import annotations

import cv2
import numpy as np
from skimage import data

from vsr.train import tape
from vsr.video.jitter import JITTER_THRESHOLD, detect_jitter, jitter_amount, luma, measure_jitter, undo_jitter

W, H = 320, 240
RADIUS = 2  # frames either side


def pan(frames: int, *, seed: int = 0, picture: np.ndarray | None = None) -> list[np.ndarray]:
    """A camera moving across a picture (default scikit-image's coffee, enlarged): Y, U, V planes of W x H."""
    photo = cv2.resize(data.coffee(), None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC) if picture is None \
        else picture
    rng = np.random.default_rng(seed)
    vx, vy = rng.uniform(-2.5, 2.5, 2)
    x0, y0 = 150 + rng.uniform(0, 100), 100 + rng.uniform(0, 80)
    return [tape.yuv(cv2.warpAffine(photo, np.float32([[1, 0, x0 + vx * i], [0, 1, y0 + vy * i]]), (W, H),
                                    flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)) for i in range(frames)]


def slants() -> np.ndarray:
    """Straight edges at several slants (about 30 to 60 degrees off vertical) and a disc: content whose lines
    are offset from each other by the picture itself."""
    yy, xx = np.mgrid[0:700, 0:800].astype(np.float32)
    img = np.where(np.sin((xx + 0.6 * yy) / 9.0) > 0, 190.0, 60.0)
    img[350:] = np.where(np.sin((xx[350:] - 1.7 * yy[350:]) / 13.0) > 0, 170.0, 40.0)
    img[(xx - 400) ** 2 + (yy - 350) ** 2 < 90 ** 2] = 230.0
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    return np.clip(np.stack([img, img * 0.8 + 20, 255 - img], -1), 0, 255).astype(np.uint8)


def runs(clip: list[np.ndarray]) -> list[list[np.ndarray]]:
    ys = [f[..., 0] for f in clip]
    return [ys[i - RADIUS:i + RADIUS + 1] for i in range(RADIUS, len(ys) - RADIUS)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / max(1e-6, np.mean((a.astype(np.float64) - b) ** 2))))


def inner(a: np.ndarray) -> np.ndarray:
    return a[4:-4, 16:-16]  # where a line's ends (edge pixels repeated) do not decide


def test_injected_jitter_is_measured_and_undone():
    clean = pan(7, seed=1)
    rng = np.random.default_rng(2)
    hit, truth = zip(*(tape.line_jitter(f, 0.75, rng) for f in clean))
    errors, gains = [], []
    for i, run in zip(range(RADIUS, len(hit) - RADIUS), runs(list(hit))):
        got = measure_jitter(run[RADIUS], run[:RADIUS] + run[RADIUS + 1:])
        assert got.shape == (H,) and got.dtype == np.float32
        errors.append(np.abs(got - truth[i]))
        assert np.corrcoef(got, truth[i])[0, 1] > 0.8
        fixed = tape.yuv(undo_jitter(tape.rgb(hit[i]), got))[..., 0]
        before = psnr(inner(tape.yuv(tape.rgb(hit[i]))[..., 0]), inner(clean[i][..., 0]))
        gains.append(psnr(inner(fixed), inner(clean[i][..., 0])) - before)
    # what is left is mostly the mean of the five frames' own offsets, which no frame can tell
    e = np.concatenate(errors)
    assert np.median(e) <= 0.3 and np.percentile(e, 90) <= 0.75, (np.median(e), np.percentile(e, 90))
    assert min(gains) > 3.0, gains
    amount = detect_jitter(runs(list(hit)))
    assert amount is not None and 0.35 <= amount <= 0.8, amount  # measured of a true mean |offset| of 0.6


def test_larger_offsets_are_followed_coarse_to_fine():
    clean = pan(5, seed=3)
    rng = np.random.default_rng(4)
    hit, truth = zip(*(tape.line_jitter(f, 2.5, rng) for f in clean))
    ys = [f[..., 0] for f in hit]
    got = measure_jitter(ys[2], ys[:2] + ys[3:])
    assert np.abs(truth[2]).max() > 4  # offsets of several pixels are there
    assert np.corrcoef(got, truth[2])[0, 1] > 0.8 and np.median(np.abs(got - truth[2])) < 0.35 * 2.5


def test_clean_footage_is_not_taken_for_jitter():
    """Slanted edges, a disc and a photograph, under a camera moving diagonally: the lines' offsets from each
    other are the picture's, the same in every frame, and stay."""
    for clip in (pan(7, seed=5), pan(7, seed=6, picture=slants())):
        amount = jitter_amount(runs(clip))
        assert amount < JITTER_THRESHOLD / 3, amount
        assert detect_jitter(runs(clip)) is None
        for run, f in zip(runs(clip), clip[RADIUS:]):
            got = measure_jitter(run[RADIUS], run[:RADIUS] + run[RADIUS + 1:])
            assert np.abs(got).max() < 0.25, np.abs(got).max()
            pic = tape.rgb(f)
            undone = undo_jitter(pic, got)
            assert psnr(inner(undone), inner(pic)) > 50 and np.abs(undone.astype(int) - pic).max() <= 12


def test_a_thing_moving_on_its_own_is_not_taken_for_jitter():
    """A textured block crossing a still photograph fast (7 px a frame, a third of the width): the flow's
    local part, the segments of a line that must agree and the frames before and after counting alike keep
    most of its motion out of the lines' offsets (what the flow misses of it still moves a few lines, by
    about a pixel at most)."""
    still = tape.rgb(pan(1, seed=11)[0])
    block = cv2.resize(data.astronaut(), (110, 90), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(7):
        f = still.copy()
        x = 20 + 7 * i
        f[70:160, x:x + 110] = block
        frames.append(tape.yuv(f))
    assert jitter_amount(runs(frames)) < JITTER_THRESHOLD / 2
    ys = [f[..., 0] for f in frames]
    got = measure_jitter(ys[3], ys[1:3] + ys[4:6])
    assert np.abs(got).max() < 1.5 and np.mean(np.abs(got) > 0.25) < 0.2, np.abs(got).max()
    assert np.abs(np.concatenate([got[:60], got[170:]])).max() < 0.15  # the lines it does not cross
    unpaired = measure_jitter(ys[3], ys[1:3] + ys[4:6], before=0)  # as if all came after: nothing cancels
    assert np.abs(unpaired).mean() > 2 * np.abs(got).mean()


def test_deterministic_and_without_neighbours():
    clip = pan(5, seed=7)
    ys = [f[..., 0] for f in tape.line_jitter(clip[0], 1.0, np.random.default_rng(8))[:1]] + \
        [f[..., 0] for f in clip[1:]]
    a = measure_jitter(ys[0], ys[1:])
    b = measure_jitter(ys[0].copy(), [y.copy() for y in ys[1:]])
    assert a.tobytes() == b.tobytes()
    assert not measure_jitter(ys[0], []).any()  # nothing to compare with: nothing told from one picture


def test_uint16_frames():
    clean = pan(5, seed=9)
    rng = np.random.default_rng(10)
    hit, truth = zip(*(tape.line_jitter(f, 1.0, rng) for f in clean))
    deep = [tape.rgb(f).astype(np.uint16) * 257 for f in hit]
    ys = [luma(f) for f in deep]
    assert np.allclose(ys[2], luma(tape.rgb(hit[2])), atol=1e-3)
    got = measure_jitter(ys[2], ys[:2] + ys[3:])
    fixed = undo_jitter(deep[2], got)
    assert fixed.dtype == np.uint16 and fixed.shape == deep[2].shape
    # the same repair as at 8 bits, at 16
    eight = undo_jitter(tape.rgb(hit[2]), got).astype(np.float64) * 257
    assert np.abs(fixed.astype(np.float64) - eight).mean() < 257 * 0.6
    ref = tape.rgb(clean[2]).astype(np.float64) * 257
    assert psnr(inner(fixed) / 257, inner(ref) / 257) > psnr(inner(deep[2]) / 257, inner(ref) / 257) + 3
