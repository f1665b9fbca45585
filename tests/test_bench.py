"""`vsr bench` and the projection of a video's time: fast, on tiny networks and clips."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vsr import projection, weights, zoo
from vsr.bench import parse_size
from vsr.cli import main
from vsr.engine import Upscaler
from vsr.engine import measure as measure_mod
from vsr.engine.measure import count_flops
from vsr.errors import VsrError

from conftest import tiny

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402

KEYS = ("model", "size", "precision", "seconds_per_frame", "gflops", "peak_gflops", "pipeline_fps", "model_fps",
        "device", "threads", "runs")


def compact_flops_per_px(nf: int, num_conv: int, upscale: int) -> int:
    """Multiply-adds of a compact net by hand, x2 for FLOPs: first conv, body convs, last conv (3x3 each)."""
    return 2 * 9 * (3 * nf + num_conv * nf * nf + nf * 3 * upscale ** 2)


def test_flop_count_matches_a_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 12, 3, padding=1),
                        nn.PixelShuffle(2), nn.Flatten(), nn.Linear(3 * 16 * 16, 5))
    with torch.no_grad():
        flops = count_flops(lambda: net(torch.rand(2, 3, 8, 8)))
    macs = 2 * 64 * (3 * 4 * 9 + 4 * 12 * 9) + 2 * 768 * 5  # two images
    assert flops == 2 * macs
    # through the engine, by its contract: a compact net, every conv at the input's resolution
    desc = tiny("compact", nf=8, num_conv=2, upscale=4)
    engine = Upscaler(desc, device="cpu", precision="fp32", tile=0)
    assert count_flops(lambda: engine(torch.rand(1, 3, 12, 16))) == 12 * 16 * compact_flops_per_px(8, 2, 4)


def test_bench_json_has_the_numbers(tiny_weights, capsys, monkeypatch):
    monkeypatch.setattr(measure_mod, "matmul_size", lambda device: 128)  # the peak's size, not its method
    monkeypatch.setattr("vsr.bench.matmul_size", lambda device: 128)
    args = ["bench", "--model", str(tiny_weights), "--size", "16x12", "--frames", "3", "--runs", "1",
            "--device", "cpu", "--precision", "fp32", "--codec", "ffv1", "--json"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    r = json.loads(out[0])
    assert all(k in r for k in KEYS), set(KEYS) - set(r)
    assert (r["model"], r["size"], r["precision"], r["device"], r["runs"]) == (str(tiny_weights), "16x12", "fp32",
                                                                               "cpu", 1)
    for k in ("seconds_per_frame", "gflops", "peak_gflops", "pipeline_fps", "model_fps", "threads"):
        assert r[k] > 0, k
    assert r["flops_per_frame"] == 16 * 12 * compact_flops_per_px(8, 1, 2)  # the tiny_weights network
    assert r["out_size"] == "32x24"
    assert r["peak_ratio"] == pytest.approx(r["gflops"] / r["peak_gflops"])


@pytest.mark.parametrize("args,message", [
    (["--size", "big"], "WIDTHxHEIGHT"),
    (["--size", "0x12"], "WIDTHxHEIGHT"),
    (["--model", "no-such-model"], "unknown model"),
    (["--precision", "fp8"], "unknown precision"),
    (["--frames", "1"], "more than one batch"),
    (["--clip", "missing.mkv"], "does not exist"),
])
def test_bench_bad_arguments_are_one_line(tiny_weights, capsys, args, message):
    base = [] if "--model" in args else ["--model", str(tiny_weights)]
    assert main(["bench", *base, *args, "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("vsr: error:"), err


def test_bench_clip_shorter_than_frames_is_one_line(tmp_path, tiny_weights, capsys):
    src = media.make_mp4(tmp_path / "short.mp4", width=16, height=12, frames=3, audio=False)
    assert main(["bench", "--model", str(tiny_weights), "--clip", str(src), "--frames", "5", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 3 frames" in err[0], err


def test_a_precision_the_device_cannot_run_is_one_line(monkeypatch):
    def no_kernels(*a, **k):
        raise RuntimeError('"slow_conv2d_cpu" not implemented for \'Half\'')

    monkeypatch.setattr(torch.nn.functional, "conv2d", no_kernels)
    with pytest.raises(VsrError, match="cannot run float16"):
        measure_mod.check_precision_runs(torch.float16, torch.device("cpu"))


def test_parse_size():
    assert parse_size("768x576") == (768, 576) and parse_size(" 16X12 ") == (16, 12)


# -- projection of a video's time -----------------------------------------------------------------------------

def test_projection_from_a_slow_first_batch_and_from_the_batches_after_a_quick_one():
    lines, asked = [], []

    def hint(seconds):
        asked.append(seconds)
        return "--model quick"

    now = [0.0]
    p = projection.Projection(name="tape.mkv", device=torch.device("cpu"), write=lines.append, hint=hint,
                              clock=lambda: now[0])
    p.progress(0, 1000)
    now[0] = 20.0
    p.progress(1, 1000)  # 20 s for the first frame: 1000 frames take about 5 h 33 min
    assert lines == ["tape.mkv: about 5 h 33 min for 1000 frames (20.00 s per frame on cpu); faster: --model quick"]
    assert asked == [pytest.approx(20 * 1000)]
    p.progress(2, 1000)
    assert len(lines) == 1  # said once

    lines.clear()
    now[0] = 0.0
    q = projection.Projection(name="clip.mkv", device=torch.device("cuda"), write=lines.append, hint=hint,
                              clock=lambda: now[0])
    q.progress(0, 100_000)
    now[0] = 2.0
    q.progress(4, 100_000)  # a quick first batch is mostly warm-up: not yet
    now[0] = 4.0
    q.progress(8, 100_000)
    assert lines == []
    now[0] = 12.0
    q.progress(84, 100_000)  # 80 frames in 10 s after the first batch
    assert lines == ["clip.mkv: about 3 h 28 min for 100000 frames (0.12 s per frame on cuda)"]  # no hint on a GPU


def test_projection_says_nothing_for_a_short_job():
    lines = []
    now = [0.0]
    p = projection.Projection(name="a.mkv", device=torch.device("cpu"), write=lines.append, clock=lambda: now[0])
    p.progress(0, 100)
    now[0] = 6.0
    p.progress(1, 100)  # 10 minutes: over SHOW_OVER_S
    assert len(lines) == 1 and "10 min" in lines[0] and "faster" not in lines[0]
    lines.clear()
    r = projection.Projection(name="b.mkv", device=torch.device("cpu"), write=lines.append, clock=lambda: now[0])
    now[0] = 0.0
    r.progress(0, 20)
    now[0] = 6.0
    r.progress(1, 20)  # 2 minutes
    assert lines == []


def test_choose_prefers_what_fits_at_the_users_scale():
    opts = [projection.Option(flags="--model small", flops_per_px=10.0, keeps_scale=True),
            projection.Option(flags="--model mid", flops_per_px=40.0, keeps_scale=True),
            projection.Option(flags="--model mid --scale 2", flops_per_px=38.0, keeps_scale=False),
            projection.Option(flags="--model same", flops_per_px=90.0, keeps_scale=True)]
    # 4 h at 100 per pixel: mid (1.6 h) does not fit the hour, small (24 min) does
    assert projection.choose(opts, current_flops_per_px=100.0, seconds=4 * 3600).startswith("--model small (10x")
    # 2 h: mid fits (48 min), and keeps the scale
    assert projection.choose(opts, current_flops_per_px=100.0, seconds=2 * 3600).startswith("--model mid (2.5x")
    # 20 h: nothing fits, the cheapest is named
    assert projection.choose(opts, current_flops_per_px=100.0, seconds=20 * 3600).startswith("--model small")
    assert projection.choose(opts, current_flops_per_px=15.0, seconds=20 * 3600) is None  # nothing 2x cheaper


def _card(folder: Path, name: str, desc, scale: int, content: str = "photographic") -> None:
    weights.save(desc, folder / f"{name}.safetensors")
    (folder / f"{name}.yml").write_text(f"name: {name}\narchitecture: compact\nscale: {scale}\ncontent: {content}\n"
                                        f"weights: {name}.safetensors\nlicense: MIT\nsource: tests\n")


@pytest.fixture
def user_zoo(monkeypatch):
    """A slow and two quick named models in the user's models folder; the shipped ones left out (loading
    and counting them is seconds, not what is tested)."""
    folder = zoo.user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _card(folder, "slow", tiny("compact", nf=16, num_conv=2, upscale=2), 2)
    _card(folder, "quick", tiny("compact", nf=4, num_conv=1, upscale=2), 2)
    _card(folder, "quick-x4", tiny("compact", nf=4, num_conv=1, upscale=4), 4)
    _card(folder, "toon", tiny("compact", nf=4, num_conv=1, upscale=2), 2, content="animation")
    every = zoo.cards
    monkeypatch.setattr(zoo, "cards", lambda: {k: c for k, c in every().items() if c.path.parent == folder})
    yield folder
    for p in folder.iterdir():
        p.unlink()


def test_zoo_options_count_each_model_and_spell_scale_variants(user_zoo):
    options = {o.flags: o for o in projection.zoo_options(model="slow", card_name="slow", scale=2)}
    assert set(options) == {"--model quick", "--model quick --scale 4"}  # not toon: made for animation
    assert options["--model quick"].flops_per_px == compact_flops_per_px(4, 1, 2)
    assert not options["--model quick --scale 4"].keeps_scale


@pytest.mark.parametrize("quiet", [False, True])
def test_upscale_says_the_projected_time_and_a_faster_model(tmp_path, user_zoo, capsys, monkeypatch, quiet):
    monkeypatch.setattr(projection, "MEASURE_S", 0.0)  # the tiny clip stands for a long one
    monkeypatch.setattr(projection, "SHOW_OVER_S", 0.0)
    monkeypatch.setattr(projection, "SUGGEST_OVER_S", 0.0)
    src = media.make_mp4(tmp_path / "clip.mp4", width=32, height=24, frames=6, audio=False)
    args = ["upscale", str(src), "-o", str(tmp_path / "out.mkv"), "--model", "slow", "--device", "cpu",
            "--encoder-preset", "ultrafast"]
    assert main(args + (["--quiet"] if quiet else [])) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "frames (" in ln]
    if quiet:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("vsr: clip.mp4: about "), lines
        assert "for 6 frames" in lines[0] and "on cpu); faster: --model quick (" in lines[0], lines


def test_a_named_ncnn_model_is_looked_at_without_converting_it_into_the_cache():
    card = zoo.cards()["realesr-animevideov3"]
    desc = zoo.load_card(card, cache=False)
    assert (desc.arch, desc.scale) == ("compact", 4)
    assert not card.weights_path().exists()  # nothing written, so `vsr models` still says "converted on first use"
