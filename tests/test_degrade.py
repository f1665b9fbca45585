from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vsr import metrics
import cv2

from vsr.train import capture
from vsr.train.degrade import DegradeConfig, Degradation, MixPart, jpeg


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
    d = Degradation(config=DegradeConfig(luma_noise=(0.02, 0.02), codecs={"jpeg": 1.0}))
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


@pytest.mark.parametrize("codec", ["h264", "mpeg2", "mjpeg", "dv"])
def test_capture_codecs_are_real_encoders_whose_quality_shows(codec):
    hr = _photo(96)
    frames = [hr, np.roll(hr, 2, axis=1), np.roll(hr, 4, axis=1)]  # a clip: predicted frames too
    low, high = capture.codec_roundtrip(frames, codec, 0.0), capture.codec_roundtrip(frames, codec, 1.0)
    assert [f.shape for f in low] == [f.shape for f in frames] and low[0].dtype == np.uint8
    p_low, p_high = (np.mean([metrics.psnr(o, f, y=False) for o, f in zip(x, frames)]) for x in (low, high))
    assert 20 < p_low < 45 and p_high < 50
    if codec != "dv":  # DV has one fixed rate
        assert p_low < p_high - 2


def test_dv_keeps_a_quarter_of_the_chroma_horizontally():
    hr = _photo(96)
    out = capture.codec_roundtrip([hr], "dv", 1.0)[0]
    ycc_in, ycc_out = (cv2.cvtColor(x, cv2.COLOR_RGB2YCrCb).astype(float) for x in (hr, out))
    grad = lambda c, axis: np.abs(np.diff(c, axis=axis)).mean()  # noqa: E731
    assert grad(ycc_out[..., 1], 1) / grad(ycc_in[..., 1], 1) < 0.6 < grad(ycc_out[..., 0], 1) / grad(ycc_in[..., 0], 1)


def test_tape_noise_is_streaked_along_the_line():
    n = capture.tape_noise((200, 200), strength=0.05, streak=2.0, banding=0.0, rng=np.random.default_rng(0))
    corr = lambda a, b: float(np.corrcoef(a.ravel(), b.ravel())[0, 1])  # noqa: E731
    assert corr(n[:, 1:], n[:, :-1]) > 0.8 and abs(corr(n[1:], n[:-1])) < 0.1
    assert abs(float(n.std()) - 0.05) < 0.005
    banded = capture.tape_noise((200, 200), strength=0.0, streak=0.0, banding=0.02, rng=np.random.default_rng(0))
    assert np.allclose(banded, banded[:, :1]) and 0.015 < banded[:, 0].std() < 0.025


def test_dropouts_are_short_horizontal_streaks():
    y = np.full((100, 100), 0.3, np.float32)
    out = capture.dropouts(y, rate=5.0, rng=np.random.default_rng(1))
    hit = out > 0.5
    assert 0.001 < hit.mean() < 0.2  # about 5 streaks of 3-25 px, half of them white (the rest repeat a line)
    rows = np.flatnonzero(hit.any(axis=1))
    assert len(rows) <= 8 and (capture.dropouts(y, rate=0.0, rng=np.random.default_rng(1)) == y).all()


def test_deinterlacers_leave_their_own_residue():
    from vsr.video.ingest import combing

    hr = _photo(128).astype(np.float32) / 255
    res = {m: capture.interlace(hr, mode=m, motion=3.0, field=0) for m in ("weave", "blend", "double")}
    comb = {m: combing((v[..., 0] * 255).astype(np.uint8)) for m, v in res.items()}
    assert comb["weave"] > 3 * comb["blend"] and comb["weave"] > 3 * comb["double"]
    assert comb["weave"] > 2 * combing((hr[..., 0] * 255).astype(np.uint8))
    assert np.array_equal(res["double"][0::2], hr[0::2])  # the kept field is untouched


def test_downscale_kernels_and_choices():
    hr = _photo(128)
    quiet = dict(luma_noise=(0, 0), chroma_noise=(0, 0), tape_noise=(0, 0), tape_banding=(0, 0), dropouts=(0, 0),
                 codecs={"none": 1.0}, sharpen=(0, 0))
    outs = {}
    for k in ("area", "bicubic", "gaussian"):
        d = Degradation(config=DegradeConfig(downscale={k: 1.0}, **quiet))
        p = d.sample(np.random.default_rng(0))
        assert p.downscale == k and p.codec == "none"
        outs[k] = d(hr, p, np.random.default_rng(0))
    assert not np.array_equal(outs["area"], outs["bicubic"]) and not np.array_equal(outs["area"], outs["gaussian"])
    with pytest.raises(ValueError, match="codecs: unknown choice 'vp9'"):
        DegradeConfig(codecs={"vp9": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        DegradeConfig(downscale={"area": 0.0})
    draws = [Degradation().sample(np.random.default_rng(i)).codec for i in range(200)]
    assert set(draws) == {"jpeg", "h264", "mpeg2", "mjpeg", "dv", "none"}  # the default model uses them all


def test_digital_sources_skip_the_analog_chain():
    hr = _photo(128)
    d = Degradation(config=DegradeConfig(digital=1.0, sensor_noise=(0, 0), codecs={"none": 1.0},
                                         downscale={"area": 1.0}))
    p = d.sample(np.random.default_rng(0))
    assert p.digital
    out = d(hr, p, np.random.default_rng(0))
    # nothing but the kernel: the same as a plain area downscale, chroma and luma detail intact
    assert np.array_equal(out, cv2.resize(hr, (32, 32), interpolation=cv2.INTER_AREA))
    noisy = Degradation(config=DegradeConfig(digital=1.0, sensor_noise=(0.03, 0.03), codecs={"none": 1.0},
                                             downscale={"area": 1.0}))
    diff = noisy(hr, noisy.sample(np.random.default_rng(0)), np.random.default_rng(1)).astype(float) - out
    assert 5 < diff.std() < 10  # 0.03 * 255 = 7.65 in every RGB channel, clipped at the ends
    assert not Degradation().sample(np.random.default_rng(0)).digital  # off unless a recipe asks
    with pytest.raises(ValueError, match="digital: expected a probability"):
        DegradeConfig(digital=1.5)


def test_antialiased_kernels_widen_with_the_factor():
    import torch
    import torch.nn.functional as F

    hr = _photo(128)
    quiet = dict(digital=1.0, sensor_noise=(0, 0), codecs={"none": 1.0})
    out = {}
    for k in ("bicubic", "bicubic-aa"):
        d = Degradation(config=DegradeConfig(downscale={k: 1.0}, **quiet))
        out[k] = d(hr, d.sample(np.random.default_rng(0)), np.random.default_rng(0))
    t = torch.from_numpy(hr).permute(2, 0, 1)[None].float()
    ref = F.interpolate(t, scale_factor=0.25, mode="bicubic", antialias=True).round().clamp(0, 255)
    assert np.array_equal(out["bicubic-aa"], ref[0].permute(1, 2, 0).numpy().astype(np.uint8))
    # point-sampled bicubic aliases: more high-frequency energy than the antialiased kernel leaves
    hf = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert hf(out["bicubic"]) > 1.1 * hf(out["bicubic-aa"])


def test_a_mixture_draws_each_part_for_its_share():
    from vsr.train.config import from_dict

    narrow = {"downscale": {"area": 1.0}, "codecs": {"jpeg": 1.0}}
    clean = {"downscale": {"bicubic-aa": 1.0}, "digital": 1.0, "codecs": {"none": 1.0}}
    cfg = from_dict({"name": "mix", "data": {"frames": "x", "degradation": {
        "downscale": {"lanczos": 1.0}, "mix": [{"share": 0.3, "config": narrow}, {"share": 0.2, "config": clean}]}},
        "networks": {"generator": {"arch": "rrdb"}}, "steps": [{"network": "generator", "losses": ["pixel"]}],
        "losses": {"pixel": {"type": "l1"}}, "total_steps": 1}).data.degradation
    d = Degradation(config=cfg, scale=4)
    rng = np.random.default_rng(0)
    draws = [d.sample(rng) for _ in range(2000)]
    kinds = [p.downscale for p in draws]
    assert abs(kinds.count("area") / 2000 - 0.3) < 0.04 and abs(kinds.count("bicubic-aa") / 2000 - 0.2) < 0.04
    assert abs(kinds.count("lanczos") / 2000 - 0.5) < 0.04
    assert all(p.digital and p.codec == "none" for p in draws if p.downscale == "bicubic-aa")
    assert all(p.codec == "jpeg" for p in draws if p.downscale == "area")
    assert {(p.downscale, p.part) for p in draws} == {("area", 0), ("bicubic-aa", 1), ("lanczos", -1)}
    # without a mixture, the draws are what they always were
    plain = DegradeConfig(downscale={"lanczos": 1.0})
    a, b = Degradation(config=plain), Degradation(config=DegradeConfig(downscale={"lanczos": 1.0}, mix=[]))
    assert a.sample(np.random.default_rng(5)) == b.sample(np.random.default_rng(5))
    with pytest.raises(ValueError, match="mix: expected shares"):
        DegradeConfig(mix=[MixPart(0.7), MixPart(0.6)])


def test_tape_defects_drawn_only_where_a_recipe_asks():
    """The head-switching band and the vertical chroma delay (vsr.train.tape) for training: the default config
    draws exactly what it drew before; with ranges, the band tears the bottom lines and chroma moves down."""
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    assert Degradation(config=DegradeConfig(), scale=2).sample(rng()) == \
        Degradation(config=DegradeConfig(head_switching=(0, 0), chroma_shift_v=(0, 0)), scale=2).sample(rng())
    hr = np.full((96, 96, 3), 120, np.uint8)
    hr[:, ::8] = 40  # upright lines: something for the band to tear
    hr[40:56] = (200, 40, 40)  # a red band across: colour edges for the chroma to move off
    cfg = DegradeConfig(codecs={"none": 1.0}, luma_noise=(0, 0), chroma_noise=(0, 0), tape_noise=(0, 0),
                        tape_banding=(0, 0), dropouts=(0, 0), chroma_shift=(0, 0), sharpen=(0, 0),
                        downscale={"area": 1.0})
    deg = Degradation(config=cfg, scale=2)
    params = deg.sample(rng())
    base = deg(hr, params, rng())
    torn = deg(hr, replace(params, head_switching=6, head_skew=8.0), rng())
    changed = np.abs(torn.astype(int) - base).max(axis=(1, 2)) > 8
    assert changed[-6:].all() and not changed[:-6].any()
    moved = deg(hr, replace(params, chroma_shift_v=2.0), rng())
    rows = np.abs(moved.astype(int) - base).max(axis=(1, 2))
    assert rows[19:22].max() > 20 and rows[:14].max() <= 2 and rows[34:].max() <= 2  # around the band's top edge
    with pytest.raises(ValueError, match="head_switching: expected values in"):
        DegradeConfig(head_switching=(0, 40))
