"""Building the networks a recipe names, their EMA copies, and exporting the trained generator."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import arch, weights
from ..errors import VsrError
from .config import NetworkConfig, RecipeConfig, to_dict
from .discriminator import VGGDiscriminator

DISCRIMINATORS = {"vgg_discriminator": VGGDiscriminator}


def build_network(name: str, cfg: NetworkConfig) -> tuple[nn.Module, dict[str, Any]]:
    """(module in training mode, constructor params)."""
    if cfg.arch in DISCRIMINATORS:
        if cfg.weights:
            sd = weights.read_state_dict(cfg.weights)
            net = DISCRIMINATORS[cfg.arch](**cfg.params)
            net.load_state_dict(sd)
        else:
            net = DISCRIMINATORS[cfg.arch](**cfg.params)
        params = dict(cfg.params)
    elif cfg.weights:
        if cfg.params:
            raise VsrError(f"networks.{name}: 'params' are read from the weights; remove them or 'weights'")
        from .. import zoo  # names resolve through the model cards

        desc, _ = zoo.resolve(cfg.weights)
        if desc.arch != cfg.arch:
            raise VsrError(f"networks.{name}: {cfg.weights} is a {desc.arch} network, not {cfg.arch}")
        net, params = desc.model, dict(desc.params)
    else:
        try:
            desc = arch.build(cfg.arch, **cfg.params)
        except ValueError as e:
            raise VsrError(f"networks.{name}: {e}") from None
        net, params = desc.model, dict(desc.params)
    net.train().requires_grad_(True)
    if cfg.checkpointing:
        enable_checkpointing(net)
    return net, params


def enable_checkpointing(net: nn.Module) -> int:
    """Recompute RRDB blocks in the backward pass instead of storing their activations.

    The blocks' forward methods are wrapped on the instances, so parameter names (and saved
    state dicts) do not change. Returns the number of blocks wrapped.
    """
    from ..arch.rrdb import RRDB

    n = 0
    for m in net.modules():
        if isinstance(m, RRDB):
            plain = m.forward
            m.forward = functools.partial(_checkpointed, plain)  # type: ignore[method-assign]
            n += 1
    return n


def _checkpointed(fn, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return checkpoint(fn, x, use_reentrant=False)
    return fn(x)


class EMA:
    """Exponential moving average of a network's weights (buffers are copied)."""

    def __init__(self, *, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def starting_licence(start: str | None) -> tuple[str, str]:
    """(licence, source) of a model fine-tuned from ``start`` (a model name or a weights file; None
    for random initialisation): a fine-tune carries the licence of the weights it started from."""
    if not start:
        return "user", "trained with vsr"
    from .. import zoo

    path = Path(start).expanduser()
    is_file = path.suffix.lower() in (*weights.WEIGHT_SUFFIXES, ".param") or path.is_file()
    card = None if is_file else zoo.cards().get(start)
    if card is None:
        return ("unknown (see the starting weights)",
                f"fine-tuned with vsr from the weights file {start}, whose licence applies")
    return card.license, (f"fine-tuned with vsr from {start}, whose licence ({card.license}) applies; "
                          f"{start}: {card.source}")


def export(model: nn.Module, params: dict[str, Any], cfg: RecipeConfig, *, name: str, folder: Path,
           steps: int, seconds: float, metrics: dict[str, float] | None = None) -> Path:
    """fp16 safetensors plus a model card, so that ``vsr upscale --model NAME`` finds it at once.

    Every constructor argument goes into the file's ``vsr.params`` (some, like a compact network's
    ``out_scale``, cannot be told from the tensors' shapes)."""
    net_cfg = cfg.networks[cfg.generator]
    folder.mkdir(parents=True, exist_ok=True)
    wpath = folder / f"{name}.safetensors"
    weights.save(model.state_dict(), wpath, dtype=torch.float16,
                 metadata={"vsr.params": json.dumps(params), "recipe": json.dumps(to_dict(cfg))})
    provenance: dict[str, Any] = {
        "recipe": cfg.name, "data": cfg.data.frames, "steps": steps,
        "training_time": f"{seconds / 60:.1f} min", "initial_weights": net_cfg.weights or "random",
    }
    if metrics:
        provenance["validation"] = {k: round(v, 3) for k, v in metrics.items()}
    licence, source = starting_licence(net_cfg.weights)
    card = {
        "name": name, "architecture": net_cfg.arch, "scale": cfg.scale, "license": licence, "source": source,
        "description": f"{net_cfg.arch} x{cfg.scale} trained with recipe {cfg.name}",
        "weights": wpath.name, "provenance": provenance,
    }
    cpath = folder / f"{name}.yml"
    tmp = cpath.with_name(cpath.name + ".partial")
    tmp.write_text(yaml.safe_dump(card, sort_keys=False))
    tmp.replace(cpath)
    return cpath
