"""Recipes load strictly; bad recipes and bad data fail fast with one line, before any training."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from vsr.errors import VsrError
from vsr.train.config import find_recipe, load_recipe
from vsr.train.loop import train

TINY = Path(__file__).with_name("train_tiny.yml")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "pipelines" / "experiments"


def write_frames(folder: Path, n: int = 3, size: int = 96, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = cv2.resize((rng.random((size // 4, size // 4, 3)) * 255).astype(np.uint8), (size, size),
                         interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"img{i}.png"), img)
    return folder


def recipe(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(TINY.read_text())
    data["data"]["frames"] = str(tmp_path / "frames")
    data["output"] = str(tmp_path / "run")
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(data))
    return path


_DELETE = object()


def test_shipped_recipes_load():
    for name in ("finetune-esrgan", "vhs-esrgan", EXPERIMENTS / "capture-esrgan.yml", EXPERIMENTS / "esrgan-gan.yml"):
        cfg = load_recipe(name)
        assert cfg.steps and cfg.losses and cfg.networks[cfg.generator].arch == "rrdb"
    # the shipped esrgan's narrow model, and the wide one the newer recipes use
    assert load_recipe("vhs-esrgan").data.degradation.codecs == {"jpeg": 1.0}
    assert len(load_recipe(EXPERIMENTS / "capture-esrgan.yml").data.degradation.codecs) == 6
    mixed = load_recipe("capture-esrgan-3").data.degradation  # the wide model with two more parts
    assert [m.share for m in mixed.mix] == [0.3, 0.25] and mixed.mix[0].config.codecs == {"jpeg": 1.0}
    compact = load_recipe("finetune-compact")
    assert compact.networks[compact.generator].arch == "compact" and compact.steps and compact.losses
    assert load_recipe(TINY).total_steps == 6
    flow = load_recipe("srflow")  # x4 from the shipped esrgan's RRDB: frozen, then trained with the flow
    net = flow.networks[flow.generator]
    assert net.arch == "srflow" and net.init_encoder == "esrgan" and 0 < net.freeze_encoder_until < flow.total_steps
    assert [loss.type for loss in flow.losses.values()] == ["nll"] and flow.scale == 4 and flow.data.patch == 40
    small = load_recipe("srflow-small")  # the shipped one: stage 2 throughout, so its encoder is esrgan's
    assert small.networks[small.generator].freeze_encoder_until > small.total_steps


@pytest.mark.parametrize("changes, expected", [
    ({"data.pach": 12}, "unknown key 'data.pach'; allowed in data: accumulate, batch,"),
    ({"totl_steps": 3}, "unknown key 'totl_steps'; allowed in a recipe:"),
    ({"losses.pixel.wieght": 1}, "unknown key 'losses.pixel.wieght'; allowed in losses.pixel:"),
    ({"steps": [{"network": "generator", "losses": ["pixel"], "optimiser": {}}]}, "unknown key 'steps[0].optimiser'"),
    ({"data.patch": "big"}, "data.patch: expected int, got 'big'"),
    ({"total_steps": 1.5}, "total_steps: expected int, got 1.5"),
    ({"precision": "fp8"}, "precision: expected one of auto, fp32, bf16, fp16, got 'fp8'"),
    ({"losses.pixel.type": "l3"}, "losses.pixel.type: expected one of l1, l2, translational"),
    ({"losses.pixel.crop": 4}, "losses.pixel: key 'crop' does not apply to a loss of type l1"),
    ({"data.degradation.jpeg_quality": [90, 10]}, "data.degradation.jpeg_quality: expected [low, high] with low <= high"),
    ({"data.degradation.noise": 1}, "unknown key 'data.degradation.noise'"),
    ({"steps": [{"network": "generator", "losses": ["pixle"]}]}, "steps[0].losses: 'pixle' is not in losses"),
    ({"steps": [{"network": "gen", "losses": ["pixel"]}]}, "steps[0].network: 'gen' is not in networks"),
    ({"networks": _DELETE}, "missing key 'networks'"),
    ({"data.batch": 0}, "data.batch: expected a positive number, got 0"),
    ({"data.degradation.luma_cutoff": [0.5]}, "data.degradation.luma_cutoff: expected a list of 2 numbers"),
    ({"data.rescale": [0.8, 1.2]}, "data.rescale: expected [low, high] with 0 < low <= high <= 1"),
    ({"losses.pixel": {"type": "distill"}}, "losses.pixel: a distill loss needs a teacher"),
    ({"losses.pixel.part": 0}, "losses.pixel: key 'part' does not apply to a loss of type l1"),
])
def test_bad_recipe_is_one_line_error(tmp_path, changes, expected):
    write_frames(tmp_path / "frames")
    t = time.perf_counter()
    with pytest.raises(VsrError) as e:
        load_recipe(recipe(tmp_path, **changes))
    assert time.perf_counter() - t < 1.0
    msg = str(e.value)
    assert "\n" not in msg and expected in msg, msg
    assert "recipe.yml" in msg


def _fails_fast(tmp_path: Path, expected: str, **changes) -> None:
    cfg = load_recipe(recipe(tmp_path, **changes))
    t = time.perf_counter()
    with pytest.raises(VsrError) as e:
        train(cfg, progress=False)
    assert time.perf_counter() - t < 1.0
    assert "\n" not in str(e.value) and expected in str(e.value), str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists(), "nothing may be trained"


def test_missing_data_folder(tmp_path):
    _fails_fast(tmp_path, "does not exist")


def test_empty_data_folder(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "notes.txt").write_text("no images here")
    _fails_fast(tmp_path, "holds no images")


def test_images_smaller_than_the_patch(tmp_path):
    write_frames(tmp_path / "frames", size=40)
    _fails_fast(tmp_path, "img1.png is 40x40 after data.prescale; a training patch needs 80 px")


def test_holdout_must_exist_and_leave_training_data(tmp_path):
    write_frames(tmp_path / "frames")
    _fails_fast(tmp_path, "data.holdout: 'nope.png' is not in", **{"data.holdout": ["nope.png"]})
    _fails_fast(tmp_path, "every image of", **{"data.holdout": ["img0.png", "img1.png", "img2.png"]})


def test_translational_crop_must_fit(tmp_path):
    write_frames(tmp_path / "frames")
    _fails_fast(tmp_path, "losses.trans.crop: expected 1..11", **{"losses.trans.crop": 12})


def test_resume_without_checkpoint(tmp_path):
    write_frames(tmp_path / "frames")
    cfg = load_recipe(recipe(tmp_path))
    with pytest.raises(VsrError, match="no checkpoint to resume from"):
        train(cfg, resume=True, progress=False)


def test_unknown_recipe_name():
    with pytest.raises(VsrError, match="unknown recipe 'nope'; shipped: .*finetune-esrgan"):
        find_recipe("nope")


def test_train_set_overrides_any_key_with_a_yaml_value(tmp_path):
    import argparse

    from vsr.train.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "x.yml", "--set", "seed=27", "--set", "networks.generator.ema=0.5",
                              "--set", "data.rescale=[0.8, 1.0]"])
    assert args.set == [("seed", 27), ("networks.generator.ema", 0.5), ("data.rescale", [0.8, 1.0])]
    cfg = load_recipe(recipe(tmp_path), **dict(args.set))
    assert cfg.seed == 27 and cfg.networks["generator"].ema == 0.5 and cfg.data.rescale == (0.8, 1.0)
    args = parser.parse_args(["train", "x.yml", "--set", "data.degradation.mix.2.config.sensor_noise=[0,0.04]"])
    shipped = load_recipe("photos-esrgan-64", **dict(args.set))
    assert shipped.data.degradation.mix[2].config.sensor_noise == (0.0, 0.04)
    with pytest.raises(VsrError, match="cannot set data.degradation.mix.3.share: 3 is not a key or item number"):
        load_recipe("photos-esrgan-64", **{"data.degradation.mix.3.share": 0.1})
    cfg = load_recipe(recipe(tmp_path), **{"data.degradation.mix": [{"share": 0.5, "config": {"digital": 1.0}}],
                                           "data.degradation.digital": 0.0})
    assert cfg.data.degradation.mix[0].config.digital == 1.0
    with pytest.raises(VsrError, match="cannot set data.patch.x: x is not a key or item number there"):
        load_recipe(recipe(tmp_path), **{"data.patch.x": 1})
    for bad in ("seed", "a b=1", "seed=[1"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "x.yml", "--set", bad])


def test_video_source_and_paired_folders(tmp_path):
    import av

    from vsr.train.config import DataConfig
    from vsr.train.data import TrainData, load_frames

    video = tmp_path / "clip.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(video), "w") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv444p"
        for _ in range(6):
            img = cv2.resize((rng.random((24, 24, 3)) * 255).astype(np.uint8), (96, 96))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    train_frames, held = load_frames(DataConfig(frames=str(video), patch=12, max_frames=3), scale=4)
    assert len(train_frames) == 3 and not held and train_frames[0].hq.shape == (96, 96, 3)

    hq_dir = write_frames(tmp_path / "hq", n=2, size=64)
    (tmp_path / "lq").mkdir()
    for p in hq_dir.iterdir():
        cv2.imwrite(str(tmp_path / "lq" / p.name), cv2.resize(cv2.imread(str(p)), (16, 16), interpolation=cv2.INTER_AREA))
    cfg = DataConfig(frames=str(hq_dir), lq=str(tmp_path / "lq"), patch=8)
    frames, _ = load_frames(cfg, scale=4)
    data = TrainData(frames=frames, cfg=cfg, scale=4, seed=0)
    batch = data.batch(0, range(3))
    assert batch["lq"].shape == (3, 3, 8, 8) and batch["hq"].shape == (3, 3, 32, 32)
    # the pair stays aligned through crops and flips
    down = torch.nn.functional.avg_pool2d(batch["hq"], 4)
    assert (down - batch["lq"]).abs().mean() < 0.02
    assert torch.equal(data.batch(0, range(3))["lq"], batch["lq"])  # a pure function of (step, index)
    cv2.imwrite(str(tmp_path / "lq" / "img0.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(VsrError, match="expected 16x16"):
        load_frames(cfg, scale=4)


def test_rescale_cuts_patches_from_larger_regions_reproducibly(tmp_path):
    from vsr.train.data import TrainData, load_frames

    write_frames(tmp_path / "frames", size=256)
    cfg = load_recipe(recipe(tmp_path, **{"data.rescale": [0.5, 0.5]}))
    frames, _ = load_frames(cfg.data, scale=cfg.scale)
    data = TrainData(frames=frames, cfg=cfg.data, scale=cfg.scale, seed=3)
    lq, hq, *_ = data.sample(5, 1)
    p, s = cfg.data.patch, cfg.scale
    assert lq.shape == (p, p, 3) and hq.shape == (p * s, p * s, 3)
    assert all(np.array_equal(a, b) for a, b in zip(data.sample(5, 1)[:2], (lq, hq)))  # (step, index) decide
    # the ground truth is a region twice the patch, shrunk: its detail is twice as fine as the photo's
    plain = TrainData(frames=frames, cfg=load_recipe(recipe(tmp_path)).data, scale=cfg.scale, seed=3)
    grad = [np.abs(np.diff(np.stack([d.sample(k, 0)[1] for k in range(8)]).astype(float), axis=2)).mean()
            for d in (plain, data)]
    assert grad[1] > 1.5 * grad[0]
