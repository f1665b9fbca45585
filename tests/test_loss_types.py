"""The registry of loss types: every type is built and computed on tiny tensors, its defaults apply where a
recipe leaves a key out, and a recipe the trainer cannot honour is a one-line error before training."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vsr import arch, weights
from vsr.errors import VsrError
from vsr.train import loss_types, losses
from vsr.train.config import LossConfig, load_recipe
from vsr.train.discriminator import VGGDiscriminator
from vsr.train.loop import train

from test_train_config import recipe, write_frames

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {  # the keys a type cannot do without
    "gan": {"discriminator": "d"}, "perceptual": {"vgg_weights": "vgg.safetensors", "layer": "conv1_2"},
    "distill": {"teacher": "teacher.safetensors"},
}


def _vgg(folder: Path) -> Path:
    g = torch.Generator().manual_seed(1)
    sd = {"features.0.weight": torch.randn(64, 3, 3, 3, generator=g) * 0.1, "features.0.bias": torch.zeros(64),
          "features.2.weight": torch.randn(64, 64, 3, 3, generator=g) * 0.05, "features.2.bias": torch.zeros(64)}
    weights.save(sd, folder / "vgg.safetensors")
    return folder / "vgg.safetensors"


def _loss(tmp_path: Path, name: str) -> LossConfig:
    keys = {k: str(tmp_path / v) if k in ("vgg_weights", "teacher") else v for k, v in NEEDS.get(name, {}).items()}
    return LossConfig(type=name, **keys)


def test_the_registry_is_one_list_without_duplicates():
    assert list(loss_types.TYPES) == ["l1", "l2", "translational", "gan", "perceptual", "pingpong", "temporal",
                                      "nll", "distill"]
    with pytest.raises(ValueError, match="'l1' is registered twice"):
        loss_types._registry([loss_types.Pixel("l1"), loss_types.Pixel("l1")])
    with pytest.raises(VsrError, match="unknown loss type 'l3'; expected one of l1, l2"):
        loss_types.get("l3")
    # the recipe keys are the types' own keys, each declared by the config
    assert set(loss_types.KEYS) <= {f for f in LossConfig.__dataclass_fields__}


@pytest.mark.parametrize("name", list(loss_types.TYPES))
def test_every_type_computes_on_tiny_tensors(tmp_path, name):
    torch.manual_seed(0)
    _vgg(tmp_path)
    weights.save(arch.build("rrdb", nf=4, nb=1, gc=4, scale=2), tmp_path / "teacher.safetensors")
    kind, loss = loss_types.get(name), _loss(tmp_path, name)
    fixed = kind.prepare(SimpleNamespace(scale=2), "x", loss, torch.device("cpu"))
    assert (fixed is not None) == (name in ("perceptual", "distill"))
    lq, hq = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    gen = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Upsample(scale_factor=2))
    mb = {"lq": lq, "hq": hq, "part": torch.tensor([0, 1]), "corner": torch.tensor([0, 3]),
          "corner_b": torch.tensor([1, 2])}
    nets = {"d": VGGDiscriminator(nf=4, levels=2)}
    if name == "translational":  # its term comes with the outputs it makes
        out, term, cut = kind.generate(gen, lq, mb, loss=loss, patch=8, scale=2)
        assert out.shape == cut(hq).shape == (2, 3, 12, 12)
    elif name in ("pingpong", "temporal"):  # clips (B, T, C, H, W); ping-pong: 3 frames visited 0 1 2 1 0
        frames = torch.rand(2, 5 if name == "pingpong" else 3, 3, 16, 16, requires_grad=True)
        s = loss_types.Scene(lq=lq, target=torch.rand(2, frames.shape[1], 3, 16, 16), mb=mb, net=gen, nets=nets,
                             make_out=lambda: frames, frames=3)
        term = kind.term(loss, s, fixed)
    elif name == "nll":
        flow = lambda hq, lq, quant: ([], torch.full((2,), float(quant)))  # noqa: E731  (latents, nll per sample)
        s = loss_types.Scene(lq=lq, target=hq, mb=mb, net=flow, nets=nets, make_out=lambda: gen(lq))
        term = kind.term(loss, s, fixed)
        assert term.item() == 256  # the default dequantisation reached the flow
    else:
        s = loss_types.Scene(lq=lq, target=hq, mb=mb, net=gen, nets=nets, make_out=lambda: gen(lq))
        term = kind.term(loss, s, fixed)
    assert term.ndim == 0 and torch.isfinite(term)
    if name != "nll":
        assert term.item() > 0 and term.requires_grad
    if name == "gan":
        judged = kind.judge(loss, nets["d"], hq, gen(lq).detach(), torch.Generator().manual_seed(0))
        assert judged.item() > 0 and torch.isfinite(judged)
    else:
        with pytest.raises(VsrError, match=f"a {name} loss cannot train a discriminator"):
            kind.judge(loss, nets["d"], hq, hq, torch.Generator())


def test_defaults_belong_to_the_types():
    gan, given = LossConfig(type="gan", discriminator="d"), LossConfig(type="gan", discriminator="d", noise=0.5)
    gan_keys = ("gan_type", "noise", "gradient_penalty")
    assert [loss_types.get("gan").value(gan, k) for k in gan_keys] == ["vanilla", 0.0, 0.0]
    assert loss_types.get("gan").value(given, "noise") == 0.5
    assert loss_types.get("pingpong").value(LossConfig(type="pingpong"), "distance") == "l1"
    assert loss_types.get("perceptual").value(LossConfig(type="perceptual"), "layer") == "conv5_4"
    assert LossConfig(type="nll").dequantisation == 256 and LossConfig(type="nll", quant=0).dequantisation == 0
    assert loss_types.get("translational").crop(LossConfig(type="translational"), 32) == 24


def test_pixel_criteria_are_l1_and_l2_only():
    a, b = torch.zeros(4), torch.full((4,), 2.0)
    assert losses.pixel(a, b, "l1").item() == 2.0 and losses.pixel(a, b, "l2").item() == 4.0
    with pytest.raises(VsrError, match="unknown pixel criterion 'huber'; expected one of l1, l2"):
        losses.pixel(a, b, "huber")


@pytest.mark.parametrize("loss, expected", [
    ({"type": "perceptual"}, "losses.perc: a perceptual loss needs VGG19 weights (nothing is downloaded); "
                             "give losses.perc.vgg_weights"),
    ({"type": "perceptual", "vgg_weights": "missing.safetensors"},
     "losses.perc.vgg_weights: missing.safetensors is not a file"),
])
def test_a_perceptual_loss_without_weights_stops_before_training(tmp_path, loss, expected):
    cfg = load_recipe(recipe(tmp_path, **{"losses.perc": loss,
                                          "steps": [{"network": "generator", "losses": ["pixel", "perc"]}]}))
    with pytest.raises(VsrError) as e:  # no frames were written: the check comes before the data load
        train(cfg, progress=False)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_the_gan_experiment_names_what_it_needs(tmp_path):
    cfg = load_recipe(ROOT / "pipelines" / "experiments" / "esrgan-gan.yml", **{"data.frames": str(tmp_path)})
    with pytest.raises(VsrError, match="losses.perceptual: a perceptual loss needs VGG19 weights"):
        train(cfg, progress=False)


def test_perceptual_with_weights_trains(tmp_path):
    write_frames(tmp_path / "frames")
    cfg = load_recipe(recipe(tmp_path, total_steps=2, **{
        "losses.perc": {"type": "perceptual", "vgg_weights": str(_vgg(tmp_path)), "layer": "conv1_2"},
        "steps": [{"network": "generator", "losses": ["pixel", "perc"]}]}))
    run = train(cfg, progress=False)
    assert all("generator/perc" in r and r["generator/perc"] > 0 for r in run.losses)
