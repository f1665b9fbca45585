"""The loop: exact resume, translational consistency, export to a usable model, guards."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from vsr import zoo
from vsr.errors import VsrError
from vsr.train import losses
from vsr.train.cli import register
from vsr.train.config import ScheduleConfig, load_recipe
from vsr.train.loop import lr_factor, train
from vsr.train.nets import enable_checkpointing

from test_train_config import recipe, write_frames


def _cfg(tmp_path: Path, **changes):
    if not (tmp_path / "frames").exists():
        write_frames(tmp_path / "frames")
    return load_recipe(recipe(tmp_path, **changes))


def test_resume_gives_the_same_losses(tmp_path):
    whole = train(_cfg(tmp_path / "a"), progress=False)
    cfg_b = _cfg(tmp_path / "b")
    first = train(cfg_b, stop_after=4, progress=False)
    assert first.step == 4 and (tmp_path / "b" / "run" / "checkpoints" / "latest.pt").is_file()
    second = train(cfg_b, resume=True, progress=False)
    assert second.step == 6
    keys = [k for k in whole.losses[0] if k != "seconds"]
    for a, b in zip(whole.losses, first.losses + second.losses):
        assert set(a) == set(b)
        for k in a:
            if k != "seconds":
                assert a[k] == b[k], (k, a[k], b[k])
    assert "generator/trans" in whole.losses[-1] and "generator/trans" not in whole.losses[0], keys
    assert whole.metrics == second.metrics
    print("resume equivalence:", [round(x["generator/total"], 6) for x in whole.losses])


class PointwiseUp(nn.Module):
    """1x1 convolution + nearest upsampling: every output pixel sees one input pixel (equivariant)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return nn.functional.interpolate(self.conv(x), scale_factor=4, mode="nearest")


def test_translational_loss_zero_only_for_an_equivariant_generator():
    torch.manual_seed(0)
    lq = torch.rand(8, 3, 16, 16)
    corners = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    corners_b = torch.tensor([1, 2, 3, 0, 3, 0, 1, 2])  # adjacent and diagonal pairs
    _, zero = losses.translational(PointwiseUp(), lq, corners, corners_b, crop=12, scale=4)
    assert zero.item() == 0.0
    # zero-padded 3x3 convolutions see the crop border: not equivariant
    torch.manual_seed(0)
    padded = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1),
                           nn.Upsample(scale_factor=4, mode="nearest"))
    out_a, pos = losses.translational(padded, lq, corners, corners_b, crop=12, scale=4)
    assert pos.item() > 1e-3 and out_a.shape == (8, 3, 48, 48)
    pos.backward()  # gradients flow through both outputs
    assert padded[0].weight.grad.abs().sum() > 0
    # and the target crop matches the generated corner
    hq = nn.functional.interpolate(lq, scale_factor=4, mode="nearest")
    tgt = losses.target_crop(hq, corners, patch=16, crop=12, scale=4)
    ident = nn.Upsample(scale_factor=4, mode="nearest")
    out, _ = losses.translational(ident, lq, corners, corners_b, crop=12, scale=4)
    assert torch.equal(out, tgt)


def test_pingpong_interface():
    frames = torch.rand(2, 4, 3, 8, 8)
    stateless = losses.pingpong(lambda x, prev: x * 2, frames)
    assert stateless.item() == 0.0
    recurrent = losses.pingpong(lambda x, prev: x if prev is None else 0.5 * (x + prev), frames)
    assert recurrent.item() > 0


def test_checkpointing_gives_the_same_gradients():
    from vsr import arch

    torch.manual_seed(0)
    a = arch.build("rrdb", nf=8, nb=2, gc=4).model
    b = arch.build("rrdb", nf=8, nb=2, gc=4).model
    b.load_state_dict(a.state_dict())
    assert enable_checkpointing(b) == 2
    assert list(a.state_dict()) == list(b.state_dict())
    x = torch.rand(2, 3, 8, 8)
    a(x).square().mean().backward()
    b(x).square().mean().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-7)


def test_lr_schedule_is_a_function_of_the_step():
    cos = ScheduleConfig(type="cosine", warmup=2, min_factor=0.1)
    assert [round(lr_factor(s, cos, 10), 3) for s in (0, 1, 2, 10)] == [0.5, 1.0, 1.0, 0.1]
    step = ScheduleConfig(type="step", milestones=[3, 5], gamma=0.5)
    assert [lr_factor(s, step, 10) for s in (2, 3, 5)] == [1.0, 0.5, 0.25]


def test_nonfinite_loss_skips_then_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(losses, "pixel", lambda out, target, kind="l1": out.sum() * float("nan"))
    cfg = _cfg(tmp_path, max_nonfinite=3)
    with pytest.raises(VsrError, match="not finite 3 steps in a row"):
        train(cfg, progress=False)


def test_gan_and_perceptual_steps(tmp_path, capsys):
    sd = {"features.0.weight": torch.randn(64, 3, 3, 3) * 0.1, "features.0.bias": torch.zeros(64),
          "features.2.weight": torch.randn(64, 64, 3, 3) * 0.05, "features.2.bias": torch.zeros(64)}
    from vsr import weights

    weights.save(sd, tmp_path / "vgg.safetensors")
    cfg = _cfg(tmp_path, **{
        "networks.discriminator": {"arch": "vgg_discriminator", "params": {"nf": 4, "levels": 2}},
        "steps": [{"network": "generator", "losses": ["pixel", "trans", "perc", "gan", "nop"]},
                  {"network": "discriminator", "losses": ["gan"], "start": 1}],
        "losses.perc": {"type": "perceptual", "vgg_weights": str(tmp_path / "vgg.safetensors"), "layer": "conv1_2"},
        "losses.nop": {"type": "perceptual"},
        "losses.gan": {"type": "gan", "weight": 0.1, "gan_type": "relativistic", "discriminator": "discriminator",
                       "noise": 0.01, "gradient_penalty": 1.0},
        "total_steps": 4})
    run = train(cfg, progress=False)
    assert "perceptual loss 'nop' disabled" in capsys.readouterr().err
    last = run.losses[-1]
    assert {"generator/gan", "generator/perc", "discriminator/gan"} <= set(last)
    assert all(torch.isfinite(torch.tensor(v)) for v in last.values())


def test_finetune_command_writes_a_usable_model(tmp_path, monkeypatch):
    from vsr import arch, weights

    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "frames")
    torch.manual_seed(0)
    weights.save(arch.build("rrdb", nf=8, nb=1, gc=4), tmp_path / "start.safetensors")
    data = yaml.safe_load(Path(recipe(tmp_path)).read_text())
    del data["networks"]["generator"]["params"]
    (tmp_path / "ft.yml").write_text(yaml.safe_dump(data))
    parser = argparse.ArgumentParser()
    commands = register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["finetune", "--frames", str(tmp_path / "frames"), "--model",
                              str(tmp_path / "start.safetensors"), "--recipe", str(tmp_path / "ft.yml"),
                              "--steps", "2", "--name", "mine", "--quiet"])
    assert commands[args.command](args) == 0
    desc, card = zoo.resolve("mine")
    assert desc.arch == "rrdb" and desc.scale == 4 and card.provenance["steps"] == 2
    assert card.provenance["recipe"] == "mine" and card.weights == "mine.safetensors"
    assert next(iter(desc.model.state_dict().values())).dtype == torch.float32  # loaded from fp16 file
    args = parser.parse_args(["train", str(tmp_path / "ft.yml"), "--quiet"])
    with pytest.raises(VsrError, match="already holds a run; continue it with --resume"):
        commands[args.command](args)
    (tmp_path / "t").mkdir()
    tiny = recipe(tmp_path / "t", **{"data.frames": str(tmp_path / "frames")})
    args = parser.parse_args(["train", str(tiny), "--steps", "2", "--name", "mine2", "--quiet"])
    assert commands[args.command](args) == 0
    assert zoo.resolve("mine2")[1].provenance["steps"] == 2
