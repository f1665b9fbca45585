"""The loss types a recipe can name: one registry, through which the loop and the clip trainer dispatch.

Each type owns its keys and their defaults, its checks (when the recipe loads, before training starts,
against the generator once it is built) and its computation; :mod:`vsr.train.losses` holds the maths.
A recipe the trainer cannot honour is an error, never a loss silently left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from ..arch import Contract
from ..errors import VsrError
from . import ddp, losses
from .discriminator import DISCRIMINATORS

if TYPE_CHECKING:
    from .config import LossConfig, RecipeConfig

Tensor = torch.Tensor


@dataclass
class Scene:
    """What the generator made of one micro-batch, for its losses. ``out`` and ``target`` are (B, C, H, W)
    on patches, (B, T, C, H, W) on clips (in visiting order); a flow's ``out`` (its temperature-0 image) is
    made on first use."""
    lq: Tensor
    target: Tensor
    mb: dict[str, Tensor]
    net: nn.Module  # the generator as trained (DDP-wrapped where it is)
    nets: dict[str, nn.Module]  # every network, as trained
    make_out: Callable[[], Tensor]
    frames: int = 1  # clip length (ping-pong)
    cut: Callable[[Tensor], Tensor] = lambda x: x  # a full-size output cut as ``target`` was (translational)
    _out: Tensor | None = field(default=None, repr=False)
    _images: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def out(self) -> Tensor:
        if self._out is None:
            self._out = self.make_out().float()
        return self._out

    def images(self) -> tuple[Tensor, Tensor]:
        """(output, target) as a batch of images: every frame of a clip is one. Made once: the losses
        that use them share one node of the graph (and so one order of summing their gradients)."""
        if self._images is None:
            clips = self.out.ndim == 5
            self._images = (self.out.flatten(0, 1), self.target.flatten(0, 1)) if clips else (self.out, self.target)
        return self._images


class LossType:
    """A loss type. ``keys``: its own recipe keys and their defaults (None: worked out from the recipe or
    required). ``patches``/``clips``: the data it trains on; ``flow``: whether a flow generator (the sampled
    contract) trains with it."""
    name = ""
    keys: dict[str, Any] = {}
    patches = clips = True
    flow = False

    def value(self, loss: LossConfig, key: str) -> Any:
        """A key of this type, its default where the recipe leaves it out."""
        given = getattr(loss, key)
        return self.keys[key] if given is None else given

    def check_loss(self, loss: LossConfig) -> None:
        """At load, the loss alone (ValueError)."""

    def check_recipe(self, cfg: RecipeConfig, name: str, loss: LossConfig) -> None:
        """At load, against the rest of the recipe (ValueError)."""
        if not self.patches and cfg.data.clips is None:
            raise ValueError(f"losses.{name}: {self.needs_clips}; give data.clips (e.g. clips: {{frames: 5}})")

    needs_clips = ""  # why a type that trains only on clips needs them

    def check(self, cfg: RecipeConfig, name: str, loss: LossConfig) -> None:
        """Before training, before the data load (VsrError)."""

    def check_generator(self, name: str, loss: LossConfig, *, arch: str, contract: Contract) -> None:
        """Once the generator is built (VsrError)."""

    def prepare(self, cfg: RecipeConfig, name: str, loss: LossConfig, device: torch.device) -> nn.Module | None:
        """A fixed network the loss computes with (none by default)."""
        return None

    def term(self, loss: LossConfig, s: Scene, fixed: nn.Module | None) -> Tensor:
        """The unweighted loss of the generator's outputs."""
        raise NotImplementedError(self.name)

    def judge(self, loss: LossConfig, d: nn.Module, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor:
        """The unweighted loss of a discriminator (only the gan type trains one)."""
        raise VsrError(f"a {self.name} loss cannot train a discriminator")


class Pixel(LossType):
    """l1 / l2 between the output and the ground truth (a flow: its temperature-0 image)."""
    flow = True

    def __init__(self, name: str) -> None:
        self.name = name

    def term(self, loss: LossConfig, s: Scene, fixed: nn.Module | None) -> Tensor:
        return losses.pixel(s.out, s.target, self.name)


class Translational(LossType):
    """The outputs of two corner crops agree where they overlap; its term is made with the outputs."""
    name = "translational"
    keys = {"crop": None}  # low-resolution crop size: 3/4 of the patch

    def crop(self, loss: LossConfig, patch: int) -> int:
        return loss.crop or patch * 3 // 4

    def generate(self, generator: Callable[[Tensor], Tensor], lq: Tensor, mb: dict[str, Tensor], *,
                 loss: LossConfig, patch: int, scale: int) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        """Run the generator on each sample's two corner crops: (the outputs of crop A, the unweighted
        term, a function that cuts a full-size output as crop A's)."""
        crop = self.crop(loss, patch)
        out, term = losses.translational(generator, lq, mb["corner"], mb["corner_b"], crop=crop, scale=scale)

        def cut(full: Tensor) -> Tensor:
            return losses.target_crop(full, mb["corner"], patch=patch, crop=crop, scale=scale)

        return out, term, cut

    def check(self, cfg: RecipeConfig, name: str, loss: LossConfig) -> None:
        crop = self.crop(loss, cfg.data.patch)
        if not 0 < crop < cfg.data.patch:
            raise VsrError(f"losses.{name}.crop: expected 1..{cfg.data.patch - 1} (below data.patch), got {crop}")


class Gan(LossType):
    name = "gan"
    keys = {"gan_type": "vanilla", "discriminator": None, "noise": 0.0, "gradient_penalty": 0.0}

    def check_recipe(self, cfg: RecipeConfig, name: str, loss: LossConfig) -> None:
        if (loss.discriminator or "") not in cfg.networks:
            raise ValueError(f"losses.{name}.discriminator: expected one of {sorted(cfg.networks)}, "
                             f"got {loss.discriminator!r}")

    def check(self, cfg: RecipeConfig, name: str, loss: LossConfig) -> None:
        arch = cfg.networks[loss.discriminator or ""].arch
        if arch not in DISCRIMINATORS:
            raise VsrError(f"losses.{name}.discriminator: {loss.discriminator!r} is a {arch}, not a discriminator "
                           f"({', '.join(DISCRIMINATORS)})")

    def term(self, loss: LossConfig, s: Scene, fixed: nn.Module | None) -> Tensor:
        out, target = s.images()
        d = ddp.unwrap(s.nets[loss.discriminator or ""])
        return losses.gan_g_loss(d, target, out, kind=self.value(loss, "gan_type"))

    def judge(self, loss: LossConfig, d: nn.Module, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor:
        return losses.gan_d_loss(d, real, fake, kind=self.value(loss, "gan_type"), noise=self.value(loss, "noise"),
                                 gp=self.value(loss, "gradient_penalty"), rng=rng)


class Perceptual(LossType):
    name = "perceptual"
    keys = {"vgg_weights": None, "layer": "conv5_4"}

    def check(self, cfg: RecipeConfig, name: str, loss: LossConfig) -> None:
        if not loss.vgg_weights:
            raise VsrError(f"losses.{name}: a perceptual loss needs VGG19 weights (nothing is downloaded); give "
                           f"losses.{name}.vgg_weights (a file in torchvision's vgg19 layout) or remove the loss")
        if not Path(loss.vgg_weights).expanduser().is_file():
            raise VsrError(f"losses.{name}.vgg_weights: {loss.vgg_weights} is not a file; give a VGG19 "
                           "weights file (torchvision's vgg19 layout)")

    def prepare(self, cfg: RecipeConfig, name: str, loss: LossConfig, device: torch.device) -> nn.Module:
        return losses.VGGFeatures(weights=Path(loss.vgg_weights or "").expanduser(),
                                  layer=self.value(loss, "layer")).to(device)

    def term(self, loss: LossConfig, s: Scene, fixed: nn.Module | None) -> Tensor:
        out, target = s.images()
        return losses.perceptual(fixed, out, target)


class PingPong(LossType):
    name = "pingpong"
    keys = {"distance": "l1"}
    patches = False
    needs_clips = "the ping-pong loss runs a clip forward and back"

    def check_generator(self, name: str, loss: LossConfig, *, arch: str, contract: Contract) -> None:
        if contract != Contract.RECURRENT:
            raise VsrError(f"losses.{name}: the ping-pong loss needs a frame-recurrent generator "
                           f"(rrdb-recurrent); {arch} sees one frame at a time")

    def term(self, loss: LossConfig, s: Scene, fixed: nn.Module | None) -> Tensor:
        return losses.pingpong(s.out, s.frames, self.value(loss, "distance"))


class Temporal(LossType):
    name = "temporal"
    keys = {"distance": "l1"}
    patches = False
    needs_clips = "the temporal loss compares consecutive frames"

    def term(self, loss: LossConfig, s: Scene, fixed: nn.Module | None) -> Tensor:
        return losses.temporal(s.out, s.target, self.value(loss, "distance"))


class Nll(LossType):
    """A flow's negative log-likelihood of the ground truth, bits per HR pixel."""
    name = "nll"
    keys = {"quant": 256}  # dequantisation levels of the ground truth (8-bit data); 0 = none
    flow = True

    def check_loss(self, loss: LossConfig) -> None:
        if loss.quant is not None and loss.quant < 0:
            raise ValueError("quant: expected 0 (no dequantisation) or the number of levels, e.g. 256, "
                             f"got {loss.quant}")

    def check_recipe(self, cfg: RecipeConfig, name: str, loss: LossConfig) -> None:
        for i, s in enumerate(cfg.steps):
            if name in s.losses and s.network != cfg.generator:
                raise ValueError(f"steps[{i}].losses: {name!r} (nll) is the generator's likelihood; "
                                 f"this step trains {s.network!r}")

    def check_generator(self, name: str, loss: LossConfig, *, arch: str, contract: Contract) -> None:
        if contract != Contract.SAMPLED:
            raise VsrError(f"losses.{name}: the nll loss needs a flow generator (srflow); a {arch} has no likelihood")

    def term(self, loss: LossConfig, s: Scene, fixed: nn.Module | None) -> Tensor:
        return losses.nll(s.net, s.target, s.lq, quant=self.value(loss, "quant"))


class Distill(LossType):
    name = "distill"
    keys = {"teacher": None, "part": None}  # part None: every sample
    clips = False

    def check_loss(self, loss: LossConfig) -> None:
        if not loss.teacher:
            raise ValueError("a distill loss needs a teacher: a model name or weights file, e.g. teacher: esrgan-vhs")

    def check(self, cfg: RecipeConfig, name: str, loss: LossConfig) -> None:
        if cfg.data.clips is not None:
            raise VsrError(f"losses.{name}: the distill loss trains on patches (remove data.clips)")
        parts = len(cfg.data.degradation.mix)
        if loss.part is not None and not -1 <= loss.part < parts:
            raise VsrError(f"losses.{name}.part: expected -1 (the mixture's own model) or a part of "
                           f"data.degradation.mix (0..{parts - 1}), got {loss.part}")

    def prepare(self, cfg: RecipeConfig, name: str, loss: LossConfig, device: torch.device) -> nn.Module:
        from .. import zoo

        try:
            desc = zoo.resolve(loss.teacher)[0]
        except VsrError as e:
            raise VsrError(f"losses.{name}.teacher: {e}") from None
        if desc.contract != Contract.PLAIN or abs(desc.scale - cfg.scale) > 1e-6:
            raise VsrError(f"losses.{name}.teacher: {loss.teacher} is a {desc.arch} model (x{desc.scale:g}, "
                           f"{desc.contract}); a teacher must be a plain x{cfg.scale:g} model")
        return desc.model.float().eval().requires_grad_(False).to(device, memory_format=torch.channels_last)

    def term(self, loss: LossConfig, s: Scene, fixed: nn.Module | None) -> Tensor:
        with torch.no_grad():
            taught = s.cut(fixed(s.lq).float())  # the same crop as the target's
        return losses.distill(s.out, taught, s.mb["part"], loss.part)


def _registry(types: list[LossType]) -> dict[str, LossType]:
    found: dict[str, LossType] = {}
    for t in types:
        if t.name in found:
            raise ValueError(f"loss type {t.name!r} is registered twice")
        found[t.name] = t
    return found


# every loss type, in the order recipes' error messages list them
TYPES = _registry([Pixel("l1"), Pixel("l2"), Translational(), Gan(), Perceptual(), PingPong(), Temporal(), Nll(),
                   Distill()])
KEYS = sorted(set().union(*(t.keys for t in TYPES.values())))  # every type's own keys


def get(name: str) -> LossType:
    try:
        return TYPES[name]
    except KeyError:
        raise VsrError(f"unknown loss type {name!r}; expected one of {', '.join(TYPES)}") from None


def check(cfg: RecipeConfig) -> None:
    """Before training (before the data load): what each step trains with, and each loss against the recipe."""
    for i, ts in enumerate(cfg.steps):  # a discriminator's step trains it with the gan losses that name it
        judge = cfg.networks[ts.network].arch in DISCRIMINATORS
        for name in ts.losses:
            loss = cfg.losses[name]
            if judge and (loss.type != "gan" or loss.discriminator != ts.network):
                raise VsrError(f"steps[{i}].losses: {name!r} ({loss.type}) cannot train the discriminator "
                               f"{ts.network!r}; its steps take only gan losses with discriminator: {ts.network}")
    for name, loss in cfg.losses.items():
        get(loss.type).check(cfg, name, loss)


def check_generator(cfg: RecipeConfig, *, arch: str, contract: Contract) -> None:
    """Each loss against the generator's contract: a flow (sampled) trains only with the flow types."""
    for name, loss in cfg.losses.items():
        t = get(loss.type)
        if contract == Contract.SAMPLED and not t.flow:
            raise VsrError(f"losses.{name}: a {arch} generator trains with the nll loss and l1/l2 on its "
                           f"temperature-0 image (it samples: no one output for other losses), got {loss.type}")
        t.check_generator(name, loss, arch=arch, contract=contract)


def prepare(cfg: RecipeConfig, device: torch.device) -> dict[str, nn.Module]:
    """The fixed networks of the losses that have one (VGG features, teachers), by loss name; never
    trained. Built type by type, in the registry's order."""
    fixed = {}
    for t in TYPES.values():
        for name, loss in cfg.losses.items():
            if loss.type == t.name:
                net = t.prepare(cfg, name, loss, device)
                if net is not None:
                    fixed[name] = net
    return fixed


def terms(cfg: RecipeConfig, active: list[str], s: Scene, fixed: dict[str, nn.Module],
          made: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The weighted terms of the generator's active losses; ``made``: terms computed while generating
    (translational), kept first."""
    out = dict(made or {})
    for name in active:
        if name not in out:
            loss = cfg.losses[name]
            out[name] = loss.weight * get(loss.type).term(loss, s, fixed.get(name))
    return out
