from __future__ import annotations

import numpy as np
import pytest

from vsr import metrics
from vsr.train.degrade import DegradeConfig, Degradation, jpeg


def _photo(size=128):
    ski = pytest.importorskip("skimage.data")
    img = ski.astronaut()  # 512x512 RGB
    return np.ascontiguousarray(img[100:100 + size, 150:150 + size])


def test_shape_dtype_and_determinism():
    hr, d = _photo(), Degradation()
    p = d.sample(np.random.default_rng(3))
    a = d(hr, p, np.random.default_rng(5))
    b = d(hr, p, np.random.default_rng(5))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert d.sample(np.random.default_rng(3)) == p


def test_degradation_loses_chroma_and_detail():
    hr = _photo(256)
    cfg = DegradeConfig(luma_noise=(0, 0), chroma_noise=(0, 0), jpeg_quality=(95, 95), sharpen=(0, 0))
    d = Degradation(config=cfg, scale=1)
    out = d(hr, d.sample(np.random.default_rng(0)), np.random.default_rng(0))
    # chroma is smeared far more than luma (VHS: ~0.5 MHz chroma vs ~3 MHz luma)
    import cv2
    ycc_in, ycc_out = (cv2.cvtColor(x, cv2.COLOR_RGB2YCrCb).astype(float) for x in (hr, out))
    grad = lambda c: np.abs(np.diff(c, axis=1)).mean()  # noqa: E731 - horizontal detail
    luma_kept = grad(ycc_out[..., 0]) / grad(ycc_in[..., 0])
    chroma_kept = grad(ycc_out[..., 1]) / grad(ycc_in[..., 1])
    assert chroma_kept < luma_kept < 1.0


def test_clip_shares_one_draw_but_not_the_noise():
    hr = _photo()
    d = Degradation(config=DegradeConfig(luma_noise=(0.02, 0.02)))
    a, b = d.clip([hr, hr], np.random.default_rng(0))
    assert not np.array_equal(a, b)  # new noise per frame
    assert metrics.psnr(a, b, y=False) > 25  # but the same degradation


def test_interlace_and_noise_ranges():
    hr = _photo()
    d = Degradation(config=DegradeConfig(interlace=1.0, luma_noise=(0, 0), chroma_noise=(0, 0)))
    p = d.sample(np.random.default_rng(0))
    assert p.interlace
    out = d(hr, p, np.random.default_rng(0))
    assert out.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="interlace: expected a probability"):
        DegradeConfig(interlace=2.0)
    with pytest.raises(ValueError, match=r"jpeg_quality: expected values in \[1, 100\]"):
        DegradeConfig(jpeg_quality=(0, 50))


def test_jpeg_is_a_real_codec_round_trip():
    hr = _photo()
    low, high = jpeg(hr, 20), jpeg(hr, 95)
    assert metrics.psnr(low, hr) < metrics.psnr(high, hr) < 60
