from __future__ import annotations

import numpy as np
import pytest

from vsr import metrics


def _img(seed=0, size=48):
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)


def test_psnr_known_values():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a.copy()
    b[..., :] = 110  # every RGB sample off by 10
    assert metrics.psnr(a, b, y=False) == pytest.approx(10 * np.log10(255 ** 2 / 100))
    # on Y (16..235 scale) a grey step of 10 is 10 * 219/255
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / (10 * 219 / 255) ** 2))
    assert metrics.psnr(a, a) == float("inf")


def test_y_is_bt601_studio_range():
    assert metrics.rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16)
    assert metrics.rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235)


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    a = _img(0)
    b = np.clip(a.astype(int) + np.random.default_rng(1).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ours = metrics.ssim(a, b, y=False)
    ref = skm.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=255)
    assert ours == pytest.approx(ref, abs=2e-3)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert 0 < metrics.ssim(a, b) < 1


def test_border_and_shape_checks():
    a, b = _img(0), _img(1)
    assert metrics.psnr(a, b, border=4) != metrics.psnr(a, b)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(a, b[:-1])
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(a[:8, :8], b[:8, :8])


def test_tof_zero_for_identical_motion():
    frames = [np.roll(_img(2, 64), s, axis=1) for s in range(3)]
    assert metrics.tof(frames, frames) == 0.0
    noisy = [np.clip(f.astype(int) + np.random.default_rng(i).integers(-40, 41, f.shape), 0, 255).astype(np.uint8)
             for i, f in enumerate(frames)]
    assert metrics.tof(noisy, frames) > 0
