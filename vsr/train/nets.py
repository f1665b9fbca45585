"""Building the networks a recipe names, their EMA copies, and exporting the trained generator."""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import arch, weights
from ..engine import quantize
from ..arch import switched
from ..errors import VsrError
from .config import NetworkConfig, RecipeConfig, to_dict
from .discriminator import DISCRIMINATORS


def build_network(name: str, cfg: NetworkConfig) -> tuple[nn.Module, dict[str, Any]]:
    """(module in training mode, constructor params)."""
    encoder = None
    if cfg.init_encoder or cfg.freeze_encoder_until:
        key = "init_encoder" if cfg.init_encoder else "freeze_encoder_until"
        try:
            cls = DISCRIMINATORS.get(cfg.arch) or arch.get_arch(cfg.arch).build
        except ValueError as e:
            raise VsrError(f"networks.{name}: {e}") from None
        if not hasattr(cls, "freeze_encoder"):
            raise VsrError(f"networks.{name}.{key}: a {cfg.arch} network has no conditional encoder (srflow has)")
    if cfg.init_encoder:
        encoder = _rrdb(cfg.init_encoder, f"networks.{name}.init_encoder")
        fixed = {k: encoder.params[k] for k in ("scale", "nf", "nb", "gc")}
        clash = {k: v for k, v in cfg.params.items() if k in fixed and v != fixed[k]}
        if clash:
            raise VsrError(f"networks.{name}.params: {clash} differ from the encoder's {cfg.init_encoder} "
                           f"({fixed}); leave them out")
        cfg = dataclasses.replace(cfg, params={**fixed, **cfg.params})
    if cfg.arch in DISCRIMINATORS:
        if cfg.weights:
            sd = weights.read_state_dict(cfg.weights)
            net = DISCRIMINATORS[cfg.arch](**cfg.params)
            net.load_state_dict(sd)
        else:
            net = DISCRIMINATORS[cfg.arch](**cfg.params)
        params = dict(cfg.params)
    elif cfg.weights:
        from .. import zoo  # names resolve through the model cards

        desc, _ = zoo.resolve(cfg.weights)
        if cfg.arch == "switched" and desc.arch == "compact":  # the staged recipe: plain first, then switched
            if set(cfg.params) - {"breadth"}:
                raise VsrError(f"networks.{name}: a compact network converted to switched takes only 'breadth'")
            try:
                net = switched.from_compact(desc.model, **cfg.params)
            except ValueError as e:
                raise VsrError(f"networks.{name}: {cfg.weights}: {e}") from None
            desc = arch.get_arch("switched").describe(switched.params_from_state_dict(net.state_dict()), net)
        elif cfg.arch == "rrdb-recurrent" and desc.arch == "rrdb":  # starts out as exactly that RRDB
            if cfg.params:
                raise VsrError(f"networks.{name}: 'params' are read from the weights; remove them or 'weights'")
            try:
                desc = arch.from_rrdb(desc)
            except ValueError as e:
                raise VsrError(f"networks.{name}: {cfg.weights}: {e}") from None
        elif cfg.params:
            raise VsrError(f"networks.{name}: 'params' are read from the weights; remove them or 'weights'")
        if desc.arch != cfg.arch:
            raise VsrError(f"networks.{name}: {cfg.weights} is a {desc.arch} network, not {cfg.arch}")
        net, params = desc.model, dict(desc.params)
    else:
        try:
            desc = arch.build(cfg.arch, **cfg.params)
        except ValueError as e:
            raise VsrError(f"networks.{name}: {e}") from None
        net, params = desc.model, dict(desc.params)
    if encoder is not None:
        try:
            net.encoder.load_state_dict(encoder.model.state_dict())
        except RuntimeError as e:  # e.g. an x2 RRDBNet, whose first conv sees pixel-unshuffled input
            raise VsrError(f"networks.{name}.init_encoder: {cfg.init_encoder} does not fit the encoder of "
                           f"{cfg.arch} {params}: {str(e).splitlines()[-1].strip()[:160]}") from None
    net.train().requires_grad_(True)
    unused = set(getattr(net, "head_parameter_names", list)())
    for n, p in net.named_parameters():  # parts no pass uses take no gradients (DDP would wait for them)
        if n in unused:
            p.requires_grad_(False)
    if cfg.checkpointing:
        enable_checkpointing(net)
    return net, params


def resolve(model: str, where: str) -> arch.ModelDescriptor:
    """A model name or weights file, loaded; an unknown one is an error naming the recipe key ``where``."""
    from .. import zoo

    try:
        return zoo.resolve(model)[0]
    except VsrError as e:
        raise VsrError(f"{where}: {e}") from None


def _rrdb(model: str, where: str) -> arch.ModelDescriptor:
    desc = resolve(model, where)
    if desc.arch != "rrdb" or desc.params["in_ch"] != 3 or desc.params["out_ch"] != 3:
        raise VsrError(f"{where}: {model} is a {desc.arch} network; expected an RGB rrdb (ESRGAN) model")
    return desc


def freeze_encoders(nets: dict[str, nn.Module], cfgs: dict[str, NetworkConfig], step: int) -> list[str]:
    """Freeze each network's conditional encoder before its ``freeze_encoder_until`` step and unfreeze it
    from there (a pure function of the step); the names of the networks whose state changed."""
    changed = []
    for name, cfg in cfgs.items():
        frozen = step < cfg.freeze_encoder_until
        if cfg.freeze_encoder_until and nets[name].encoder_frozen != frozen:
            nets[name].freeze_encoder(frozen)
            changed.append(name)
    return changed


def initialize_from_data(net: nn.Module, batch: dict[str, torch.Tensor], *, quant: int) -> int:
    """The data-dependent initialisation a network has (SRFlow's ActNorms), from a training batch,
    before the first optimizer step; the number of layers initialised (0 for other networks, and for
    weights that were loaded)."""
    init = getattr(net, "initialize_actnorms", None)
    return init(batch["hq"], batch["lq"], quant=quant) if init else 0


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
            if p.requires_grad:
                e.lerp_(p.detach(), 1.0 - self.decay)
            else:  # frozen (e.g. SRFlow's encoder in stage 2): the copy is the weights themselves
                e.copy_(p)
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


def _unchanged_encoder(sd: dict[str, torch.Tensor], name: str) -> dict[str, str] | None:
    """{model, prefix, sha256} when the encoder still holds exactly the named model's weights (it stayed
    frozen), so that the exported file can leave them out; None otherwise."""
    from .. import zoo

    card = zoo.cards().get(name)
    if card is None or not zoo.weights_present(card):
        return None
    base = weights.read_state_dict(card.weights_path())
    mine = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    if set(mine) != set(base) or any(not torch.equal(mine[k].float(), base[k].float()) for k in base):
        return None
    return {"model": name, "prefix": "encoder.", "sha256": zoo.file_sha256(card.weights_path())}


def export(model: nn.Module, params: dict[str, Any], cfg: RecipeConfig, *, name: str, folder: Path,
           steps: int, seconds: float, metrics: dict[str, float] | None = None) -> Path:
    """fp16 safetensors (a network that computes in fp32 only still stores its weights so) plus a model card, so that ``vsr upscale --model NAME`` finds it at once.

    Every constructor argument goes into the file's ``vsr.params`` (some, like a compact network's
    ``out_scale``, cannot be told from the tensors' shapes)."""
    net_cfg = cfg.networks[cfg.generator]
    folder.mkdir(parents=True, exist_ok=True)
    wpath = folder / f"{name}.safetensors"
    sd = quantize.plain_state_dict(model)
    metadata = {"vsr.params": json.dumps(params), "recipe": json.dumps(to_dict(cfg))}
    if net_cfg.quantize:
        metadata.update(quantize.metadata(model))
    if net_cfg.init_encoder and (shared := _unchanged_encoder(sd, net_cfg.init_encoder)):
        metadata["vsr.shared"] = json.dumps(shared)  # stored once, in the named model's file
        sd = {k: v for k, v in sd.items() if not k.startswith(shared["prefix"])}
    weights.save(sd, wpath, dtype=torch.float16, metadata=metadata)
    start = net_cfg.weights or net_cfg.init_encoder
    provenance: dict[str, Any] = {
        "recipe": cfg.name, "data": cfg.data.frames, "steps": steps,
        "training_time": f"{seconds / 60:.1f} min",
        "initial_weights": f"encoder from {start}" if net_cfg.init_encoder else start or "random",
    }
    if metrics:
        provenance["validation"] = {k: float(f"{v:.5g}") for k, v in metrics.items()}  # 1.2e-4 stays 1.2e-4
    licence, source = starting_licence(start)
    card = {
        "name": name, "architecture": net_cfg.arch, "scale": cfg.scale, "license": licence, "source": source,
        "description": f"{net_cfg.arch} x{cfg.scale} trained with recipe {cfg.name}",
        "weights": wpath.name, "provenance": provenance,
    }
    if net_cfg.quantize:  # its own weights, with their ranges, run as int8
        card["int8"] = wpath.name
    cpath = folder / f"{name}.yml"
    tmp = cpath.with_name(cpath.name + ".partial")
    tmp.write_text(yaml.safe_dump(card, sort_keys=False))
    tmp.replace(cpath)
    return cpath
