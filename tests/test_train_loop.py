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


def test_nonfinite_loss_with_a_grad_scaler_is_skipped(tmp_path, monkeypatch):
    """fp16 training on CUDA scales its loss; a skipped step shrinks the scale instead of ending the run.
    The scaler here is the CPU one: the same class and bookkeeping as CUDA's."""
    made = []
    monkeypatch.setattr("vsr.train.loop.grad_scaler",
                        lambda amp, device: made.append(torch.amp.GradScaler("cpu", init_scale=1024.0)) or made[-1])
    monkeypatch.setattr(losses, "pixel", lambda out, target, kind="l1": out.sum() * float("nan"))
    with pytest.raises(VsrError, match="not finite 3 steps in a row"):
        train(_cfg(tmp_path, max_nonfinite=3), progress=False)
    assert made[0].get_scale() == 1024.0 * 0.5 ** 3  # halved at each skipped step


def test_gan_and_perceptual_steps(tmp_path):
    sd = {"features.0.weight": torch.randn(64, 3, 3, 3) * 0.1, "features.0.bias": torch.zeros(64),
          "features.2.weight": torch.randn(64, 64, 3, 3) * 0.05, "features.2.bias": torch.zeros(64)}
    from vsr import weights

    weights.save(sd, tmp_path / "vgg.safetensors")
    cfg = _cfg(tmp_path, **{
        "networks.discriminator": {"arch": "vgg_discriminator", "params": {"nf": 4, "levels": 2}},
        "steps": [{"network": "generator", "losses": ["pixel", "trans", "perc", "gan"]},
                  {"network": "discriminator", "losses": ["gan"], "start": 1}],
        "losses.perc": {"type": "perceptual", "vgg_weights": str(tmp_path / "vgg.safetensors"), "layer": "conv1_2"},
        "losses.gan": {"type": "gan", "weight": 0.1, "gan_type": "relativistic", "discriminator": "discriminator",
                       "noise": 0.01, "gradient_penalty": 1.0},
        "total_steps": 4})
    run = train(cfg, progress=False)
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
    assert card.license.startswith("unknown") and "start.safetensors" in card.source  # no card to take it from
    assert next(iter(desc.model.state_dict().values())).dtype == torch.float32  # loaded from fp16 file
    args = parser.parse_args(["train", str(tmp_path / "ft.yml"), "--quiet"])
    with pytest.raises(VsrError, match="already holds a run; continue it with --resume"):
        commands[args.command](args)
    (tmp_path / "t").mkdir()
    tiny = recipe(tmp_path / "t", **{"data.frames": str(tmp_path / "frames")})
    args = parser.parse_args(["train", str(tiny), "--steps", "2", "--name", "mine2", "--quiet"])
    assert commands[args.command](args) == 0
    assert zoo.resolve("mine2")[1].provenance["steps"] == 2


def _user_card(name: str, desc, *, license: str, params: dict | None = None) -> None:
    """A named model in the user's models folder, as a fine-tune would start from."""
    from vsr import weights

    folder = zoo.user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    weights.save(desc, folder / f"{name}.safetensors")
    card = {"name": name, "architecture": desc.arch, "scale": desc.scale, "license": license,
            "source": f"made by the tests ({license})", "weights": f"{name}.safetensors"}
    if params:
        card["params"] = params
    (folder / f"{name}.yml").write_text(yaml.safe_dump(card))


def _finetune(tmp_path: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    commands = register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["finetune", "--frames", str(tmp_path / "frames"), "--quiet", *extra])
    return commands[args.command](args)


@pytest.mark.parametrize("params, scale", [
    (dict(nf=8, num_conv=1, upscale=2), 2),
    (dict(nf=8, num_conv=1, upscale=4, out_scale=0.75), 3),  # x3 = an x4 network resized by 0.75
])
def test_finetune_of_a_compact_model_keeps_its_scale_and_licence(tmp_path, monkeypatch, params, scale):
    from conftest import tiny

    monkeypatch.chdir(tmp_path)
    write_frames(tmp_path / "frames", size=192)  # the compact recipe's patch (48) x3 + margin
    start = f"tiny-compact-x{scale}"
    extra = {"out_scale": params["out_scale"]} if "out_scale" in params else None
    _user_card(start, tiny("compact", **params), license="CC-BY-4.0", params=extra)
    assert _finetune(tmp_path, "--model", start, "--steps", "2", "--name", f"{start}-ft") == 0
    desc, card = zoo.resolve(f"{start}-ft")
    assert desc.arch == "compact" and desc.scale == scale and card.scale == scale
    assert desc.params["out_scale"] == params.get("out_scale", 1.0)
    assert card.license == "CC-BY-4.0" and "CC-BY-4.0" in card.source and start in card.source
    assert card.provenance["recipe"] == f"{start}-ft" and card.provenance["steps"] == 2
    out = desc.model(torch.rand(1, 3, 8, 8))
    assert out.shape[-2:] == (8 * scale, 8 * scale)


def test_finetune_recipe_follows_the_architecture(tmp_path, monkeypatch):
    from vsr.train.cli import finetune_recipe

    assert finetune_recipe("realesr-animevideov3-x2")[0].stem == "finetune-compact"
    assert finetune_recipe("esrgan")[0].stem == "finetune-esrgan"
    assert finetune_recipe("realesr-animevideov3-x3")[1] == 3
    real = zoo.cards()
    fake = zoo.ModelCard(name="flowy", architecture="srflow", scale=4, license="x", source="y", weights="f")
    monkeypatch.setattr(zoo, "cards", lambda: {**real, "flowy": fake})
    with pytest.raises(VsrError) as e:
        finetune_recipe("flowy")
    msg = str(e.value)
    assert "\n" not in msg and "srflow" in msg and "--recipe" in msg, msg


def test_distill_loss_is_l1_to_the_teacher_on_its_part_of_the_batch():
    out, taught = torch.zeros(3, 3, 4, 4), torch.ones(3, 3, 4, 4) * torch.tensor([1.0, 2.0, 4.0])[:, None, None, None]
    parts = torch.tensor([0, 1, -1])
    assert losses.distill(out, taught, parts, 0).item() == pytest.approx(1 / 3)
    assert losses.distill(out, taught, parts, -1).item() == pytest.approx(4 / 3)
    assert losses.distill(out, taught, parts, None).item() == pytest.approx(7 / 3)


def test_distill_from_the_starting_weights_starts_at_zero(tmp_path):
    """The student starts as the teacher: the term is 0 until an update moves it, and only the mixture
    part it names counts."""
    from conftest import tiny
    from vsr import weights

    weights.save(tiny("rrdb", nf=8, nb=1, gc=4, scale=4), tmp_path / "teacher.safetensors")
    teacher = str(tmp_path / "teacher.safetensors")
    cfg = _cfg(tmp_path, **{
        "networks.generator": {"arch": "rrdb", "weights": teacher},
        "data.degradation.mix": [{"share": 0.5, "config": {"codecs": {"jpeg": 1.0}}}],
        "steps": [{"network": "generator", "losses": ["pixel", "trans", "teach"]}],
        "losses.teach": {"type": "distill", "teacher": teacher, "part": 0, "weight": 2.0}, "total_steps": 4})
    run = train(cfg, progress=False)
    teach = [r["generator/teach"] for r in run.losses]
    assert teach[0] < 1e-6 and all(t > 1e-5 for t in teach[1:]), teach
    bad = _cfg(tmp_path / "bad", **{"data.degradation.mix": [{"share": 0.5, "config": {}}],
                                    "losses.teach": {"type": "distill", "teacher": teacher, "part": 1}})
    with pytest.raises(VsrError, match=r"losses.teach.part: expected -1 \(the mixture's own model\) or a part of "
                       r"data.degradation.mix \(0..0\), got 1"):
        train(bad, progress=False)
    unknown = _cfg(tmp_path / "bad", **{"losses.teach": {"type": "distill", "teacher": "no-such-model"}})
    with pytest.raises(VsrError, match="losses.teach.teacher: unknown model 'no-such-model'"):
        train(unknown, progress=False)


def test_trained_params_and_licence_are_exported(tmp_path):
    """A random-init x3 compact network (out_scale, which the shapes cannot tell) comes back as x3."""
    cfg = _cfg(tmp_path, **{"networks.generator": {"arch": "compact", "params": {
        "nf": 8, "num_conv": 1, "upscale": 4, "out_scale": 0.75}}, "scale": 3, "total_steps": 2,
        "losses.trans.start": 0})
    run = train(cfg, progress=False, export_name="rand-x3", export_dir=zoo.user_models_dir())
    desc, card = zoo.resolve("rand-x3")
    assert run.card is not None and desc.scale == 3 and desc.params["out_scale"] == 0.75
    assert card.license == "user"


def test_recipe_scale_must_match_the_generator(tmp_path):
    cfg = _cfg(tmp_path, scale=2)  # the tiny recipe's generator is x4
    with pytest.raises(VsrError, match="trains at x2, but .* is x4; set scale: 4"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_validation_is_what_the_engine_produces(tmp_path):
    """The PSNR a run reports equals that of `vsr upscale`'s engine on the same network."""
    import numpy as np

    from vsr import arch, metrics
    from vsr.engine import Upscaler
    from vsr.train.data import load_frames, validation_set

    # a compact network's output is its input upsampled plus a residual: every pixel counts
    cfg = _cfg(tmp_path, precision="bf16", **{  # training autocast must not leak into validation
        "networks.generator": {"arch": "compact", "params": {"nf": 8, "num_conv": 1}, "ema": 0.5}})
    run = train(cfg, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] == 6
    desc = arch.build("compact", **state["params"]["generator"])
    desc.model.load_state_dict(state["ema"]["generator"])
    val = validation_set(load_frames(cfg.data, scale=cfg.scale)[1], cfg=cfg.data, ev=cfg.eval, scale=cfg.scale)
    up = Upscaler(desc, device="cpu", precision="auto", tile="auto")
    outs = [up.upscale_array(lq[None])[0] for _, lq, _ in val]
    psnr = float(np.mean([metrics.psnr(o, hq, border=cfg.scale) for o, (_, _, hq) in zip(outs, val)]))
    ssim = float(np.mean([metrics.ssim(o, hq, border=cfg.scale) for o, (_, _, hq) in zip(outs, val)]))
    assert run.metrics == {"psnr_y": psnr, "ssim_y": ssim}


def test_validation_at_start_gives_the_curve_its_first_point_once(tmp_path):
    import json

    cfg = _cfg(tmp_path, **{"eval.at_start": True})
    train(cfg, stop_after=4, progress=False)
    train(cfg, resume=True, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "val/psnr_y" in r]
    assert steps[0] == 0 and steps.count(0) == 1 and steps[-1] == 6


def test_validation_leaves_the_training_module_as_it_was():
    import numpy as np

    from vsr import arch
    from vsr.train.evaluate import validate

    torch.manual_seed(0)
    desc = arch.build("compact", nf=8, num_conv=1, upscale=2)
    net = desc.model.train().to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    val = [("a", (rng.random((10, 12, 3)) * 255).astype(np.uint8), (rng.random((20, 24, 3)) * 255).astype(np.uint8))]
    for precision in ("fp32", "bf16"):
        m, outs = validate(net, val, arch="compact", params=desc.params, device=torch.device("cpu"),
                           scale=2, precision=precision)
        assert outs[0].shape == (20, 24, 3) and outs[0].dtype == np.uint8 and np.isfinite(m["psnr_y"])
        assert net.training and all(p.requires_grad and p.dtype == torch.float32 for p in net.parameters())
        assert net.body[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_one_host_sync_per_training_step(tmp_path, monkeypatch):
    """Loss terms stay on the device over the micro-batches; the loop reads them back once a step."""
    import sys

    loop_file = sys.modules[train.__module__].__file__
    calls = []
    for method in ("item", "tolist", "__bool__", "__float__"):
        plain = getattr(torch.Tensor, method)

        def counted(self, *a, _plain=plain, _name=method, **k):
            if sys._getframe(1).f_code.co_filename == loop_file:
                calls.append(_name)
            return _plain(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, method, counted)
    cfg = _cfg(tmp_path, **{"data.accumulate": 3, "data.batch": 2, "eval.every": 0, "data.holdout": [],
                            "total_steps": 4, "losses.trans.start": 2})
    run = train(cfg, progress=False)
    monkeypatch.undo()
    assert len(calls) == cfg.total_steps, calls
    assert all(type(v) is float for r in run.losses for v in r.values())
    assert {"generator/pixel", "generator/total"} <= set(run.losses[0])


GAN_NETS = {"networks.discriminator": {"arch": "vgg_discriminator", "params": {"nf": 4, "levels": 2}},
            "losses.gan": {"type": "gan", "weight": 0.1, "discriminator": "discriminator"}}


def test_a_discriminator_step_takes_only_its_gan_losses(tmp_path):
    cfg = _cfg(tmp_path, **GAN_NETS, steps=[{"network": "generator", "losses": ["pixel", "gan"]},
                                            {"network": "discriminator", "losses": ["gan", "pixel"]}])
    with pytest.raises(VsrError, match=r"steps\[1\].losses: 'pixel' \(l1\) cannot train the discriminator"):
        train(cfg, progress=False)
    cfg = _cfg(tmp_path, **{**GAN_NETS, "losses.gan": {"type": "gan", "discriminator": "generator"}})
    with pytest.raises(VsrError, match="losses.gan.discriminator: 'generator' is a rrdb, not a discriminator"):
        train(cfg, progress=False)


def test_the_generators_gan_loss_keeps_frozen_discriminator_parameters_frozen(tmp_path, monkeypatch):
    """optimizer.train_only freezes the discriminator's features; the generator's GAN loss, which turns off the
    discriminator's gradients while it runs, must not turn them back on."""
    seen = []
    d_loss = losses.gan_d_loss

    def spy(d, *args, **kwargs):
        seen.append([p.requires_grad for p in d.features.parameters()])
        return d_loss(d, *args, **kwargs)

    monkeypatch.setattr(losses, "gan_d_loss", spy)
    cfg = _cfg(tmp_path, **GAN_NETS, total_steps=3,
               steps=[{"network": "generator", "losses": ["pixel", "gan"]},
                      {"network": "discriminator", "losses": ["gan"], "optimizer": {"train_only": ["head"]}}])
    run = train(cfg, progress=False)
    assert len(seen) == 3 and not any(any(flags) for flags in seen), seen
    assert all("discriminator/gan" in r for r in run.losses)


def test_a_step_whose_only_loss_is_not_active_is_skipped(tmp_path):
    cfg = _cfg(tmp_path, total_steps=2, **{"losses.later": {"type": "l2", "start": 5}},
               steps=[{"network": "generator", "losses": ["pixel"]},
                      {"network": "generator", "losses": ["later"]}])
    run = train(cfg, progress=False)
    assert run.step == 2 and all(set(r) == {"generator/pixel", "generator/total", "seconds"} for r in run.losses)
