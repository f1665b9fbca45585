"""Network definitions and the registry that recognises them from a state dict.

Each architecture contributes an :class:`Arch`: how to recognise its state dict (any known key
layout), and how to build the module. Everything a pipeline needs to know about a loaded network
is in :class:`ModelDescriptor`, including the inference contract its module follows (see
:mod:`vsr.engine` for what each contract asks of the module).
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from . import compact, recurrent, rrdb, srflow, switched

StateDict = dict[str, torch.Tensor]

class _Kind(str, enum.Enum):
    """A kind named by a string: it compares, hashes, prints and serialises (JSON, cards) as its value."""
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, value: Any, what: str) -> Any:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{what}: expected one of {', '.join(k.value for k in cls)}, got {value!r}") from None


class Contract(_Kind):
    """How the engine calls the module (vsr.engine's docstring says what each asks of it)."""
    PLAIN = "plain"  # model(x)
    SAMPLED = "sampled"  # model.reverse(x, latents), latent_shapes(h, w)
    RECURRENT = "recurrent"  # model(x, prev_x, prev_y)


class Tiling(_Kind):
    """How the engine may split a frame."""
    TILES = "tiles"  # overlapping tiles, cross-faded
    LATENT = "latent"  # tiles, the whole frame's latents sliced to match (sampled models)


SETTINGS = ("temperature", "seed")  # per-call settings a module may take


@dataclass
class ModelDescriptor:
    arch: str
    model: nn.Module
    params: dict[str, Any]
    scale: float  # output size / input size
    in_ch: int
    out_ch: int
    size_multiple: int  # inputs are padded to a multiple of this
    bytes_per_px: int = 16384  # rough fp32 activation memory per input pixel, for automatic tiling
    tile_overlap: int = 16  # input pixels of context that tiles share so that seams don't show
    # The inference contract (vsr.engine's docstring says what each asks of the module); a string is taken
    # and checked, e.g. contract="sampled"
    contract: Contract = Contract.PLAIN
    tiling: Tiling = Tiling.TILES
    context_frames: int = 0  # recurrent: frames before a segment's first that rebuild the state
    settings: tuple[str, ...] = ()  # per-call settings the module takes, from SETTINGS
    traceable: bool = True  # a plain network whose graph does not depend on its input (another runtime can run a trace)
    # half precision by autocast: the engine keeps the weights in fp32 and calls the module under autocast in
    # the half type it picked; the module runs in fp32 what must stay so (SRFlow: its flow)
    autocast: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.contract = Contract.of(self.contract, f"{self.arch}: contract")
        self.tiling = Tiling.of(self.tiling, f"{self.arch}: tiling")
        unknown = sorted(set(self.settings) - set(SETTINGS))
        if unknown:
            raise ValueError(f"{self.arch}: settings: expected some of {', '.join(SETTINGS)}, got {unknown[0]!r}")
        if self.tiling == Tiling.LATENT and self.contract != Contract.SAMPLED:
            raise ValueError(f"{self.arch}: tiling latent: only sampled models have latents, "
                             f"this one is {self.contract}")

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass(frozen=True)
class Arch:
    name: str
    # state dict (any known layout) -> (constructor kwargs, state dict in the module's layout) or None
    detect: Callable[[StateDict], tuple[dict[str, Any], StateDict] | None]
    describe: Callable[[dict[str, Any], nn.Module], ModelDescriptor]
    build: Callable[..., nn.Module]


def _detect_rrdb(sd: StateDict):
    converted = rrdb.to_basicsr_layout(sd)
    if converted is None:
        return None
    return rrdb.params_from_state_dict(converted), converted


def _describe_rrdb(p: dict[str, Any], model: nn.Module) -> ModelDescriptor:
    return ModelDescriptor(
        arch="rrdb", model=model, params=p, scale=p["scale"], in_ch=p["in_ch"], out_ch=p["out_ch"],
        size_multiple=4 // p["scale"],
        # HR-stage activations: ~3 buffers of nf channels at 16x the (unshuffled) pixels, fp32
        bytes_per_px=3 * 4 * p["nf"] * 16 // (4 // p["scale"]) ** 2 + 4 * (p["nf"] + 5 * p["gc"]),
        # deep trunk: the output still moves at ~40 dB with context cut 16 px away, ~50 dB at 32 px
        tile_overlap=48 * (4 // p["scale"]),
    )


def _detect_rrdb_recurrent(sd: StateDict):
    converted = rrdb.to_basicsr_layout(sd)
    p = None if converted is None else recurrent.params_from_state_dict(converted)
    return None if p is None else (p, converted)


def _describe_rrdb_recurrent(p: dict[str, Any], model: nn.Module) -> ModelDescriptor:
    # the RRDB's memory and context; one frame at a time, the state (previous input and output) kept
    return dataclasses.replace(_describe_rrdb(p, model), arch="rrdb-recurrent", contract=Contract.RECURRENT,
                               context_frames=recurrent.CONTEXT_FRAMES)


def from_rrdb(desc: ModelDescriptor) -> ModelDescriptor:
    """The recurrent RRDB that starts out as the single-frame RRDB ``desc``: its weights, with the
    previous output's convolution (conv_prev) at zero and the gate closed, so the output is the same."""
    if desc.arch != "rrdb":
        raise ValueError(f"expected a single-frame rrdb model, got {desc.arch}")
    if desc.params["in_ch"] != desc.params["out_ch"]:
        raise ValueError(f"expected an rrdb with as many input as output channels, got {desc.params}")
    p = dict(desc.params)
    model = recurrent.RecurrentRRDBNet(**p)
    model.load_state_dict(recurrent.from_rrdb_state_dict(desc.model.state_dict(), scale=p["scale"]))
    model.train(desc.model.training).requires_grad_(any(t.requires_grad for t in desc.model.parameters()))
    return _describe_rrdb_recurrent(p, model)


def _detect_compact(sd: StateDict):
    p = compact.params_from_state_dict(sd)
    return None if p is None else (p, dict(sd))


def _describe_compact(p: dict[str, Any], model: nn.Module) -> ModelDescriptor:
    scale = p["upscale"] * p.get("out_scale", 1.0)
    return ModelDescriptor(
        arch="compact", model=model, params=p, scale=scale, in_ch=p["in_ch"], out_ch=p["out_ch"],
        size_multiple=1, bytes_per_px=4 * (3 * p["nf"] + 3 * p["out_ch"] * p["upscale"] ** 2),
        tile_overlap=8 * ((p["num_conv"] + 2) * 8 // 3 // 8 + 1),  # weight-0 margin > receptive radius
    )


def _describe_srflow(p: dict[str, Any], model: nn.Module) -> ModelDescriptor:
    s2 = (p["scale"] // 2) ** 2  # level-1 pixels per input pixel
    cond = p["nf"] * (1 + p["cond_blocks"])
    return ModelDescriptor(
        arch="srflow", model=model, params=p, scale=p["scale"], in_ch=3, out_ch=3,
        size_multiple=model.size_multiple,
        # fp16/bf16 for the encoder only (an RRDBNet, as esrgan), by autocast: the flow's reverse pass divides
        # by coupling scales down to 1e-4 and inverts the 1x1 convs, so it stays fp32 (SRFlowNet does so)
        autocast=True,
        # the conditioning of every level (~4/3 of level 1's) and a coupling's hidden activations, fp32
        # (a residual flow adds its encoder's SR head: two nf-channel maps at the output size)
        bytes_per_px=4 * (s2 * (2 * cond + 3 * p["hidden"] + 48) + 2 * cond + 2 * p["nf"] + 4 * p["gc"]
                          + (2 * p["nf"] * p["scale"] ** 2 if p.get("residual") else 0)),
        # the RRDB's context plus K couplings per level, each reaching 2 level pixels further
        tile_overlap=64,
        contract=Contract.SAMPLED, tiling=Tiling.LATENT, settings=("temperature", "seed"),
    )


def _detect_switched(sd: StateDict):
    p = switched.params_from_state_dict(sd)
    return None if p is None else (p, dict(sd))


def _describe_switched(p: dict[str, Any], model: nn.Module) -> ModelDescriptor:
    return ModelDescriptor(
        arch="switched", model=model, params=p, scale=p["upscale"], in_ch=p["in_ch"], out_ch=p["out_ch"],
        # the compact network's activations plus each switched layer's im2col patches and routing
        size_multiple=1, traceable=False,  # which pixels each kernel computes depends on the input
        bytes_per_px=4 * (12 * p["nf"] + 2 * p["breadth"] + 3 * p["out_ch"] * p["upscale"] ** 2),
        tile_overlap=8 * ((p["num_conv"] + 2) * 8 // 3 // 8 + 1),
    )


ARCHS: list[Arch] = [
    # before rrdb: its weights are an RRDB's plus conv_prev
    Arch("rrdb-recurrent", _detect_rrdb_recurrent, _describe_rrdb_recurrent, recurrent.RecurrentRRDBNet),
    Arch("rrdb", _detect_rrdb, _describe_rrdb, rrdb.RRDBNet),
    Arch("compact", _detect_compact, _describe_compact, compact.CompactNet),
    Arch("srflow", srflow.detect, _describe_srflow, srflow.SRFlowNet),
    Arch("switched", _detect_switched, _describe_switched, switched.SwitchedCompactNet),
]
assert len({a.name for a in ARCHS}) == len(ARCHS), "duplicate architecture name in ARCHS"


def register(arch: Arch) -> None:
    """Add an architecture to the registry (tests register their dummies this way)."""
    if any(a.name == arch.name for a in ARCHS):
        raise ValueError(f"architecture {arch.name!r} is already registered")
    ARCHS.append(arch)


def get_arch(name: str) -> Arch:
    for a in ARCHS:
        if a.name == name:
            return a
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(a.name for a in ARCHS)}")


def full_params(arch: Arch, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` completed with the constructor's defaults."""
    sig = inspect.signature(arch.build)
    unknown = set(params) - set(sig.parameters)
    if unknown:
        raise ValueError(f"{arch.name} has no parameter(s) {sorted(unknown)}; "
                         f"allowed: {sorted(sig.parameters)}")
    full = {k: params.get(k, p.default) for k, p in sig.parameters.items()}
    for k, value in params.items():
        default = sig.parameters[k].default
        kinds = (int, float) if isinstance(default, float) else (type(default),)
        if default is not inspect.Parameter.empty and default is not None and (
                not isinstance(value, kinds) or isinstance(value, bool) != isinstance(default, bool)):
            raise ValueError(f"{arch.name} parameter {k!r} must be a {type(default).__name__}, got {value!r}")
    return full


def construct(arch: Arch, params: dict[str, Any]) -> tuple[dict[str, Any], nn.Module]:
    """(full parameters, new module); ValueError names what is unknown or impossible."""
    params = full_params(arch, params)
    try:
        return params, arch.build(**params)
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. a scale the network cannot do
        raise ValueError(f"{arch.name} cannot be built with {params}: {e}") from None


def build(name: str, **params: Any) -> ModelDescriptor:
    """A freshly initialised network with its descriptor."""
    arch = get_arch(name)
    params, model = construct(arch, params)
    return arch.describe(params, model)
