"""Training the frame-recurrent generator on clips: the ping-pong loss is zero exactly when the outputs
do not depend on the previous frame, clip batches are a pure function of the step, a tiny clip recipe
trains, validates with temporal metrics and resumes exactly, and mistakes are one line."""
from __future__ import annotations

import copy
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from vsr import arch
from vsr.errors import VsrError
from vsr.train import clips, losses
from vsr.train.clipdata import ClipData
from vsr.train.config import OptimizerConfig, TrainStepConfig, load_recipe, to_dict
from vsr.train.data import load_frames
from vsr.train.loop import _optimizer, train
from vsr.train.temporal import ClipRunner

from conftest import tiny
from test_recurrent import moving_frames
from test_train_config import recipe, write_frames

TINY_REC = {"arch": "rrdb-recurrent", "params": {"nf": 8, "nb": 1, "gc": 4, "scale": 4}, "ema": 0.9}
CLIPS = {  # 3 frames of 8 LR px; held-out clips of 4 frames of 48 HR px (tOF's smallest)
    "networks.generator": TINY_REC, "data.patch": 8, "data.batch": 2, "data.clips": {"frames": 3},
    "losses.trans.crop": 6, "losses.pp": {"type": "pingpong", "weight": 0.5, "start": 3},
    "losses.flicker": {"type": "temporal", "weight": 0.5},
    "steps": [{"network": "generator", "losses": ["pixel", "trans", "pp", "flicker"],
               "optimizer": {"type": "adam", "lr": 1.0e-3, "lr_mult": {"conv_prev": 10}}, "clip_grad": 1.0}],
    "eval": {"every": 3, "crop": 48, "frames": 4, "grids": False},
}


def _clip_recipe(tmp_path: Path, **changes) -> Path:
    """The tiny recipe made a clip recipe (copies: the recipe writer edits the values it is given)."""
    return recipe(tmp_path, **copy.deepcopy({**CLIPS, **changes}))


def _clip_cfg(tmp_path: Path, **changes):
    if not (tmp_path / "frames").exists():
        write_frames(tmp_path / "frames", size=160)  # room for the moving camera
    return load_recipe(_clip_recipe(tmp_path, **changes))


def _clips(n: int = 4) -> torch.Tensor:
    """(2, n, 3, 16, 16): two moving clips, big enough for the LR motion (DIS needs 12 px)."""
    return torch.stack([moving_frames(n, 16, 16), moving_frames(n, 16, 16).flip(-1)])


def test_visit_order():
    assert losses.pingpong_order(4) == [0, 1, 2, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="at least 2 frames"):
        losses.pingpong_order(1)
    # the forward and backward estimates of each frame are the ones compared
    out = torch.zeros(1, 7, 1, 2, 2)
    out[:, 5] = 1.0  # the backward estimate of frame 1 (order 0 1 2 3 2 [1] 0)
    assert losses.pingpong(out, 4).item() == pytest.approx(1 / 3)
    assert losses.pingpong(out * 2, 4, "l2").item() == pytest.approx(4 / 3)


def test_temporal_loss_costs_flicker_not_motion(one_thread):
    truth = moving_frames(5, 64, 64)[None]  # (1, 5, 3, 64, 64), panning 1 px per frame
    g = torch.Generator().manual_seed(3)
    still_error = moving_frames(5, 64, 64)[None].roll(7, dims=-1) * 0.1  # moves with the picture
    flicker = torch.rand(1, 5, 3, 64, 64, generator=g) * 0.1  # a new error every frame
    assert losses.temporal(truth, truth).item() == 0.0
    moving = losses.temporal(truth + still_error, truth).item()
    flickering = losses.temporal(truth + flicker, truth).item()
    assert flickering > 0.02 and moving < flickering / 10, (moving, flickering)
    # a per-frame error of the same size costs the same in the pixel loss: only this loss tells them apart
    assert losses.pixel(truth + still_error, truth, "l1") > 0.5 * losses.pixel(truth + flicker, truth, "l1")
    assert losses.temporal(truth + flicker, truth, "l2").item() < flickering


def test_pingpong_is_zero_without_the_previous_frame_and_positive_with_it(one_thread):
    desc = arch.from_rrdb(tiny("rrdb", nf=8, nb=1, gc=4, scale=4))  # the previous output's weights are 0
    lq = _clips()
    still = ClipRunner(net=desc.model, recurrent=True)(lq, pingpong=True)
    assert still.shape == (2, 7, 3, 64, 64)
    assert losses.pingpong(still, 4).item() == 0.0
    plain = ClipRunner(net=tiny("rrdb", nf=8, nb=1, gc=4, scale=4).model, recurrent=False)
    assert losses.pingpong(plain(lq, pingpong=True), 4).item() == 0.0
    # the frame's own weights are unchanged; the previous output's now count
    with torch.no_grad():
        desc.model.conv_prev.weight.copy_(torch.randn_like(desc.model.conv_prev.weight) * 0.05)
    loss = losses.pingpong(ClipRunner(net=desc.model, recurrent=True)(lq, pingpong=True), 4)
    assert loss.item() > 1e-4
    loss.backward()  # it trains what the network takes from its previous output
    assert desc.model.conv_prev.weight.grad.abs().sum() > 0


def test_the_previous_output_weights_train_at_their_own_rate():
    """Adam's first step moves every weight by its learning rate: 20x for conv_prev, 1x elsewhere."""
    desc = arch.from_rrdb(tiny("rrdb", nf=8, nb=1, gc=4, scale=4))
    net = desc.model.train().requires_grad_(True)
    ts = TrainStepConfig(network="generator", losses=["pixel"],
                         optimizer=OptimizerConfig(lr=1e-4, lr_mult={"conv_prev": 20}))
    opt = _optimizer(ts, net)
    assert sorted(g["lr"] for g in opt.param_groups) == [1e-4, 2e-3]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    lq = _clips(2)
    net(lq[:, 1], lq[:, 0], torch.rand(2, 3, 64, 64)).abs().mean().backward()
    opt.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in net.named_parameters()}
    assert moved["conv_prev.weight"] == pytest.approx(2e-3, rel=0.01)
    assert moved["conv_first.weight"] == pytest.approx(1e-4, rel=0.01)
    assert max(moved.values()) == moved["conv_prev.weight"]


def test_train_only_freezes_the_rest():
    """optimizer.train_only: the gate and conv_prev train; the single-frame network keeps its weights and
    gets no gradients."""
    desc = arch.from_rrdb(tiny("rrdb", nf=8, nb=1, gc=4, scale=4))
    net = desc.model.train().requires_grad_(True)
    ts = TrainStepConfig(network="generator", losses=["pixel"],
                         optimizer=OptimizerConfig(lr=1e-3, lr_mult={"gate": 10}, train_only=["gate", "conv_prev"]))
    opt = _optimizer(ts, net)
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("gate", "conv_prev")) for n in trained)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trained)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    lq = _clips(2)
    net(lq[:, 1], lq[:, 0], torch.rand(2, 3, 64, 64)).abs().mean().backward()
    opt.step()
    moved = {n for n, p in net.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert "gate.2.weight" in moved and "conv_prev.weight" in moved and moved <= trained
    with pytest.raises(VsrError, match="optimizer.train_only.gates: no trained parameter of network 'generator'"):
        _optimizer(TrainStepConfig(network="generator", losses=["pixel"],
                                   optimizer=OptimizerConfig(train_only=["gates"])), net)


def test_the_run_feeds_the_previous_frame_and_output():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, prev_x, prev_y):
            seen.append((x[0, 0, 0, 0].item(), None if prev_x is None else prev_x[0, 0, 0, 0].item(),
                         None if prev_y is None else prev_y[0, 0, 0, 0].item()))
            return torch.nn.functional.interpolate(x, scale_factor=2) + 10

    lq = torch.arange(3.0).view(1, 3, 1, 1, 1).expand(1, 3, 1, 2, 2)  # frame t is all t
    out = ClipRunner(net=Spy(), recurrent=True)(lq, pingpong=True)
    assert seen == [(0, None, None), (1, 0, 10), (2, 1, 11), (1, 2, 12), (0, 1, 11)]
    assert out[0, :, 0, 0, 0].tolist() == [10, 11, 12, 11, 10]


def test_clip_batches(tmp_path):
    cfg = _clip_cfg(tmp_path)
    frames, held = load_frames(cfg.data, scale=4)
    assert [f.name for f in held] == ["img0.png"] and "img0.png" not in [f.name for f in frames]
    data = ClipData(frames=frames, cfg=cfg.data, scale=4, seed=0)
    b = data.batch(5, range(3))
    assert b["lq"].shape == (3, 3, 3, 8, 8) and b["hq"].shape == (3, 3, 3, 32, 32)
    assert torch.equal(data.batch(5, range(3))["hq"], b["hq"])  # a pure function of (step, index)
    assert not torch.equal(b["hq"][:, 0], b["hq"][:, 1])  # the camera moves
    down, lq = torch.nn.functional.avg_pool2d(b["hq"].flatten(0, 1), 4), b["lq"].flatten(0, 1)

    def error(dy: int, dx: int) -> float:  # the LR frames shifted against the ground truth
        return (down - lq.roll((dy, dx), (-2, -1))).abs()[..., 2:-2, 2:-2].mean().item()

    # LR and HR show the same place: unshifted fits best
    assert error(0, 0) < min(error(dy, dx) for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1)])


def test_clips_from_a_video(tmp_path):
    video = tmp_path / "pan.mkv"
    rng = np.random.default_rng(0)
    big = cv2.resize((rng.random((40, 60, 3)) * 255).astype(np.uint8), (240, 160), interpolation=cv2.INTER_CUBIC)
    with av.open(str(video), "w") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 192, 160, "yuv444p"
        for i in range(6):  # a pan, each frame a little brighter: no frame is a crop of another
            img = np.clip(big[:, 4 * i:4 * i + 192].astype(np.int16) + 3 * i, 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    cfg = _clip_cfg(tmp_path, **{"data.clips": {"frames": 3, "videos": [str(video)], "video_share": 1.0},
                                 "data.flips": False})
    frames, _ = load_frames(cfg.data, scale=4)
    data = ClipData(frames=frames, cfg=cfg.data, scale=4, seed=0)
    hq = (data.batch(0, range(2))["hq"] * 255).round().byte().permute(0, 1, 3, 4, 2).numpy()
    decoded = clips.read_video(video)

    def where(img):  # (frame, y, x) of the video frames that hold img
        return [(i, y, x) for i, f in enumerate(decoded) for y in range(0, 129, 4) for x in range(0, 161, 4)
                if np.array_equal(f[y:y + 32, x:x + 32], img)]

    for clip in hq:  # consecutive video frames, one crop
        (i, y, x), = where(clip[0])
        assert i <= 3 and [where(f) for f in clip[1:]] == [[(i + 1, y, x)], [(i + 2, y, x)]]


def test_tiny_clip_recipe_trains_validates_and_resumes(tmp_path, one_thread):
    whole = train(_clip_cfg(tmp_path / "a"), progress=False)
    cfg_b = _clip_cfg(tmp_path / "b")
    first = train(cfg_b, stop_after=4, progress=False)
    assert (tmp_path / "b" / "run" / "checkpoints" / "latest.pt").is_file()
    second = train(cfg_b, resume=True, progress=False)
    assert second.step == 6
    for a, b in zip(whole.losses, first.losses + second.losses):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert "generator/pp" in whole.losses[-1] and "generator/pp" not in whole.losses[0]  # start: 3
    assert all(np.isfinite(v) for r in whole.losses for v in r.values())
    assert whole.losses[-1]["generator/pp"] > 0
    assert set(whole.metrics) == {"psnr_y", "ssim_y", "tof", "warping_error"}
    assert all(np.isfinite(v) for v in whole.metrics.values()) and whole.metrics == second.metrics


def test_a_single_frame_generator_trains_on_clips_per_frame(tmp_path, one_thread):
    """The per-frame baseline on the same clips (and a GAN judging every frame)."""
    cfg = _clip_cfg(tmp_path, **{
        "networks.generator": {"arch": "rrdb", "params": {"nf": 8, "nb": 1, "gc": 4, "scale": 4}},
        "networks.discriminator": {"arch": "vgg_discriminator", "params": {"nf": 4, "levels": 2}},
        "losses.pp": {"type": "l2"}, "losses.gan": {"type": "gan", "weight": 0.1, "discriminator": "discriminator"},
        "steps": [{"network": "generator", "losses": ["pixel", "gan"]},
                  {"network": "discriminator", "losses": ["gan"]}],
        "total_steps": 2, "eval.every": 0})
    run = train(cfg, progress=False)
    assert {"generator/gan", "discriminator/gan"} <= set(run.losses[-1]) and "tof" in run.metrics


@pytest.mark.parametrize("changes, expected", [
    ({"data.clips": None, "losses.flicker.type": "l1"},
     "losses.pp: the ping-pong loss runs a clip forward and back; give data.clips"),
    ({"data.clips": None, "losses.pp.type": "l1"},
     "losses.flicker: the temporal loss compares consecutive frames; give data.clips"),
    ({"data.clips": {"frame": 3}}, "unknown key 'data.clips.frame'; allowed in data.clips: frames,"),
    ({"data.clips": {"frames": 1}}, "data.clips.frames: a clip needs at least 2 frames, got 1"),
    ({"data.clips": {"video_share": 2}}, "data.clips.video_share: expected a share in [0, 1]"),
    ({"losses.pp.crop": 4}, "losses.pp: key 'crop' does not apply to a loss of type pingpong"),
    ({"losses.pp.distance": "l3"}, "losses.pp.distance: expected 'l1' | 'l2' | null, got 'l3'"),
    ({"losses.pixel.distance": "l1"}, "losses.pixel: key 'distance' does not apply to a loss of type l1"),
    ({"eval.frames": 1}, "eval.frames: a validation clip needs at least 2 frames"),
    ({"steps": [{"network": "generator", "losses": ["pixel"], "optimizer": {"lr_mult": {"conv_prev": 0}}}]},
     "steps[0].optimizer: lr_mult.conv_prev: expected a multiplier above 0, got 0.0"),
])
def test_bad_clip_recipe_is_one_line(tmp_path, changes, expected):
    write_frames(tmp_path / "frames")
    with pytest.raises(VsrError) as e:
        load_recipe(_clip_recipe(tmp_path, **changes))
    assert "\n" not in str(e.value) and expected in str(e.value), str(e.value)


@pytest.mark.parametrize("changes, expected", [
    ({"networks.generator": {"arch": "rrdb", "params": {"nf": 8, "nb": 1, "gc": 4}}},
     "losses.pp: the ping-pong loss needs a frame-recurrent generator (rrdb-recurrent); rrdb sees one frame"),
    ({"data.clips": None, "losses.pp": {"type": "l1"}, "losses.flicker": {"type": "l1"}},
     "data.clips: a rrdb-recurrent generator learns from its previous output; train it on clips"),
    ({"data.clips": {"frames": 3, "videos": ["nope.mkv"]}}, "data.clips.videos: nope.mkv does not exist"),
    ({"steps": [{"network": "generator", "losses": ["pixel"], "optimizer": {"lr_mult": {"conv_next": 10}}}]},
     "optimizer.lr_mult.conv_next: no trained parameter of network 'generator' starts with 'conv_next'"),
])
def test_clip_mistakes_fail_before_training(tmp_path, changes, expected):
    write_frames(tmp_path / "frames", size=160)
    cfg = load_recipe(_clip_recipe(tmp_path, **changes))
    with pytest.raises(VsrError) as e:
        train(cfg, progress=False)
    assert "\n" not in str(e.value) and expected in str(e.value), str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_photos_too_small_for_the_camera(tmp_path):
    write_frames(tmp_path / "frames", size=96)
    cfg = load_recipe(_clip_recipe(tmp_path))
    with pytest.raises(VsrError, match=r"img1.png is 96x96 after data.prescale; a moving camera clip of 3 "
                                       r"frames of 8 LR px needs \d+ px"):
        train(cfg, progress=False)


def test_the_temporal_recipe_loads():
    cfg = load_recipe("finetune-esrgan-temporal")
    gen = cfg.networks[cfg.generator]
    assert gen.arch == "rrdb-recurrent" and gen.weights == "esrgan" and gen.ema > 0
    assert cfg.data.clips is not None and cfg.data.clips.frames == 5 and cfg.data.patch == 32
    assert 2 <= cfg.data.batch <= 4 and cfg.output == "runs/esrgan-temporal"
    assert {loss.type for loss in cfg.losses.values()} == {"l1", "temporal", "pingpong"}
    pp = next(loss for loss in cfg.losses.values() if loss.type == "pingpong")
    assert 0 < pp.start < cfg.total_steps and 0 < cfg.eval.every < cfg.total_steps
    # the same degradation model as capture-esrgan-3, its mixture included
    assert to_dict(cfg.data.degradation) == to_dict(load_recipe("capture-esrgan-3").data.degradation)
    assert cfg.data.holdout == load_recipe("capture-esrgan-3").data.holdout
