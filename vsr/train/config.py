"""Training recipes: YAML loaded strictly into typed dataclasses.

Every key is checked: an unknown or misspelt key, or a value of the wrong type, is a one-line
:class:`VsrError` that names the key and what is allowed. Nothing is read that the schema does not
declare, and nothing the schema declares is ignored by the trainer.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import catalog
from ..errors import VsrError
from ..yamlfile import read_mapping
from . import loss_types
from .degrade import DegradeConfig

LossType = Literal[tuple(loss_types.TYPES)]  # type: ignore[valid-type]  # the registry's names


@dataclass
class NetworkConfig:
    arch: str  # a name in vsr.arch.ARCHS, or "vgg_discriminator"
    weights: str | None = None  # model name (see `vsr models`) or a weights file; None = random init
    params: dict[str, Any] = field(default_factory=dict)  # constructor arguments (random init only)
    checkpointing: bool = False  # gradient checkpointing of RRDB blocks
    ema: float = 0.0  # decay of an exponential moving average of the weights (0 = none)
    # srflow (a network with a conditional encoder): an RRDB model name or weights file, e.g. esrgan
    # (trained with L1: training stage 1), whose weights start the encoder of a random-init network;
    # the params it fixes (scale, nf, nb, gc) may be left out of `params`
    init_encoder: str | None = None
    # the encoder takes no gradients nor updates before this step (stage 2: the flow trains on a fixed
    # conditioning), then trains with the flow (stage 3); 0 = never frozen
    freeze_encoder_until: int = 0
    # int8: the convolutions train on 8-bit-quantised inputs and weights (input ranges calibrated on the
    # first batches, then learned: vsr.engine.quantize), and the exported file runs as --precision int8
    quantize: str | None = None

    def __post_init__(self) -> None:
        if self.quantize not in (None, "int8"):
            raise ValueError(f"quantize: expected int8, got {self.quantize!r}")
        if self.freeze_encoder_until < 0:
            raise ValueError(f"freeze_encoder_until: expected a step (0 = never frozen), got {self.freeze_encoder_until}")
        if self.init_encoder and self.weights:
            raise ValueError("init_encoder: the encoder comes from 'weights' already; give one of the two")


@dataclass
class ClipsConfig:
    """Training on clips (for a frame-recurrent generator): each sample is ``frames`` consecutive frames of
    data.patch LR pixels, degraded with one draw of data.degradation (vsr.train.clips)."""
    frames: int = 5
    # the virtual camera over data.frames: the largest pan (HR px per frame), zoom (relative change of the
    # field of view per frame) and rotation (degrees per frame) a clip is drawn with
    shift: float = 2.0
    zoom: float = 0.01
    rotate: float = 0.5
    videos: list[str] = field(default_factory=list)  # video files whose consecutive frames make clips too
    video_share: float = 0.5  # with videos: the share of clips taken from them (the rest: the camera)
    max_video_frames: int = 300  # frames decoded from the start of each video

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ValueError(f"frames: a clip needs at least 2 frames, got {self.frames}")
        if not 0 <= self.video_share <= 1:
            raise ValueError(f"video_share: expected a share in [0, 1], got {self.video_share}")
        if self.max_video_frames < self.frames:
            raise ValueError(f"max_video_frames: expected at least frames ({self.frames}), got {self.max_video_frames}")
        for key in ("shift", "zoom", "rotate"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: expected a rate of 0 or more, got {getattr(self, key)}")


@dataclass
class DataConfig:
    frames: str | None = None  # folder of frames/photos, or a video file whose frames are extracted
    lq: str | None = None  # paired low-quality folder (same file names as `frames`); no degradation then
    holdout: list[str] = field(default_factory=list)  # file names never trained on, used for validation
    val_frames: str | None = None  # separate validation folder (instead of or besides holdout)
    prescale: float = 1.0  # resize ground truth by this first (0.5 for JPEG photos)
    # prescale only pictures whose shorter side is at least this (a corpus of mixed sizes: small ones as they are)
    prescale_min_side: int = 0
    # scale augmentation: each patch is cut from a region 1/f times larger and shrunk by f (area), f drawn
    # per patch from this range, so the same photos give their content at many sizes ([1, 1] = off)
    rescale: tuple[float, float] = (1.0, 1.0)
    max_frames: int = 400  # frames taken from a video (evenly spaced)
    patch: int = 32  # low-resolution patch size
    batch: int = 4  # per process
    accumulate: int = 1  # micro-batches per optimizer step (effective batch = batch x accumulate)
    flips: bool = True
    degradation: DegradeConfig = field(default_factory=DegradeConfig)
    clips: ClipsConfig | None = None  # clips of consecutive frames instead of single patches


@dataclass
class OptimizerConfig:
    type: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    # parameter-name prefix -> learning-rate multiplier, e.g. {gate: 40} for layers that start
    # at zero beside fine-tuned ones (Adam moves each weight by about its rate per step, whatever the
    # gradient's size, so only a rate of their own lets them grow)
    lr_mult: dict[str, float] = field(default_factory=dict)
    # parameter-name prefixes: only these parameters train, the rest stay as they are (no gradients), e.g.
    # [gate, conv_prev] to teach a recurrent network to use its past without changing its single-frame part
    train_only: list[str] | None = None

    def __post_init__(self) -> None:
        bad = [k for k, v in self.lr_mult.items() if not v > 0]
        if bad:
            raise ValueError(f"lr_mult.{bad[0]}: expected a multiplier above 0, got {self.lr_mult[bad[0]]}")


@dataclass
class ScheduleConfig:
    type: Literal["constant", "cosine", "step"] = "constant"
    warmup: int = 0  # linear warm-up steps
    milestones: list[int] = field(default_factory=list)  # "step": multiply by gamma at each
    gamma: float = 0.5
    min_factor: float = 0.0  # "cosine": final lr / lr


@dataclass
class TrainStepConfig:
    network: str  # the network this step trains
    losses: list[str]  # names from `losses`
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    clip_grad: float = 0.0  # max gradient norm (0 = off)
    start: int = 0  # first step at which this training step runs
    every: int = 1  # run it every N steps


@dataclass
class LossConfig:
    type: LossType  # a name in vsr.train.loss_types.TYPES; the keys below apply to the types named
    weight: float = 1.0
    start: int = 0
    stop: int | None = None  # first step without the loss (None = never stops)
    crop: int | None = None  # translational: low-resolution crop size (default 3/4 of the patch)
    gan_type: Literal["vanilla", "relativistic"] | None = None  # gan
    discriminator: str | None = None  # gan: network name
    noise: float | None = None  # gan: std of noise added to the discriminator's inputs
    gradient_penalty: float | None = None  # gan: weight of the R1 penalty on real inputs
    vgg_weights: str | None = None  # perceptual: VGG19 weights file (ImageNet), required (nothing is downloaded)
    layer: str | None = None  # perceptual: e.g. conv5_4
    # nll (a flow generator, srflow: its negative log-likelihood of the ground truth given the input, in
    # bits per HR pixel): uniform dequantisation noise of width 1/quant on the ground truth (default 256,
    # for 8-bit data; 0 = none)
    quant: int | None = None
    # pingpong (a frame-recurrent generator on clips, TecoGAN): the distance between the forward and the
    # backward output of each frame, l1 (the default, TecoGAN's) or l2; temporal (on clips): the distance
    # between each output's motion-compensated change from the one before and the ground truth's change
    distance: Literal["l1", "l2"] | None = None
    # distill: the L1 distance to a fixed teacher model's output (a model name or weights file), on the
    # samples that one part of the degradation mixture drew (``part``: an index into data.degradation.mix;
    # -1 = the mixture's own model; every sample without it): keeps a specialist's skill on its inputs
    teacher: str | None = None
    part: int | None = None

    def __post_init__(self) -> None:
        kind = loss_types.get(self.type)
        for key in sorted(set(loss_types.KEYS) - set(kind.keys)):
            if getattr(self, key) is not None:
                raise ValueError(f"key '{key}' does not apply to a loss of type {self.type}; "
                                 f"it takes {sorted(kind.keys) + ['start', 'stop', 'weight']}")
        kind.check_loss(self)

    @property
    def dequantisation(self) -> int:
        """nll: the quantisation levels of the ground truth (0 = no dequantisation noise)."""
        return loss_types.get("nll").value(self, "quant")


@dataclass
class EvalConfig:
    every: int = 500  # validation every N steps (0 = only at the end)
    at_start: bool = False  # also before the first step of a new run: where the curve starts
    max_images: int = 8
    crop: int = 512  # ground-truth centre crop (keeps validation quick); 0 = whole images
    seed: int = 1234  # degradation draw of the validation images (fixed across runs)
    grids: bool = True  # save sample image grids (LQ | output | ground truth)
    # clip recipes: frames of each held-out moving clip (default data.clips.frames); crop is its HR size
    frames: int | None = None


@dataclass
class LogConfig:
    every: int = 10  # log losses every N steps
    tensorboard: bool = True
    checkpoint_every: int = 0  # steps (0 = off)
    checkpoint_minutes: float = 5.0  # wall-clock cadence (0 = off)
    keep: int = 2  # checkpoints kept besides the latest


@dataclass
class RecipeConfig:
    name: str
    networks: dict[str, NetworkConfig]
    data: DataConfig
    steps: list[TrainStepConfig]
    losses: dict[str, LossConfig]
    total_steps: int
    generator: str = "generator"  # the network that is shipped
    scale: int = 4
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    max_nonfinite: int = 10  # stop after this many non-finite losses in a row
    output: str | None = None  # run folder (default runs/NAME)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.generator not in self.networks:
            raise ValueError(f"generator: {self.generator!r} is not in networks {sorted(self.networks)}")
        for i, s in enumerate(self.steps):
            if s.network not in self.networks:
                raise ValueError(f"steps[{i}].network: {s.network!r} is not in networks {sorted(self.networks)}")
            for name in s.losses:
                if name not in self.losses:
                    raise ValueError(f"steps[{i}].losses: {name!r} is not in losses {sorted(self.losses)}")
        for key in ("total_steps", "scale"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected a positive number, got {getattr(self, key)}")
        d = self.data
        for key in ("patch", "batch", "accumulate", "max_frames"):
            if getattr(d, key) < 1:
                raise ValueError(f"data.{key}: expected a positive number, got {getattr(d, key)}")
        if not 0 < d.prescale <= 1:
            raise ValueError(f"data.prescale: expected a factor in (0, 1], got {d.prescale}")
        if not 0 < d.rescale[0] <= d.rescale[1] <= 1:
            raise ValueError(f"data.rescale: expected [low, high] with 0 < low <= high <= 1, got {list(d.rescale)}")
        if d.rescale != (1.0, 1.0) and (d.lq is not None or d.clips is not None):
            raise ValueError("data.rescale: applies to single patches degraded on the fly, not to data.lq or data.clips")
        for name, loss in self.losses.items():  # each loss against the rest of the recipe
            loss_types.get(loss.type).check_recipe(self, name, loss)
        if d.clips is not None and d.lq is not None:
            raise ValueError("data.clips: clips are degraded on the fly; they cannot come from paired data.lq")
        if self.eval.frames is not None and self.eval.frames < 2:
            raise ValueError(f"eval.frames: a validation clip needs at least 2 frames, got {self.eval.frames}")


# --- strict loading -----------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        mapping = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(mapping) == 1:  # its own error (an unknown key) says more
            return _convert(value, mapping[0], where)
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except VsrError:
                continue
        raise VsrError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise VsrError(f"{where}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _load_dataclass(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise VsrError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise VsrError(f"{where}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise VsrError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is bool and isinstance(value, bool) or tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise VsrError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _load_dataclass(cls: type, data: Any, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise VsrError(f"{where or 'recipe'}: expected a mapping with keys {sorted(fields)}, got {data!r}")
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise VsrError(f"unknown key '{prefix}{unknown[0]}'; allowed in {where or 'a recipe'}: {', '.join(sorted(fields))}")
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise VsrError(f"missing key '{prefix}{missing[0]}' (required in {where or 'a recipe'}: {', '.join(required)})")
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:  # a value check in __post_init__
        msg = str(e)
        if not where:
            raise VsrError(msg) from None
        own_key = msg.split(":")[0] in fields
        raise VsrError(f"{where}.{msg}" if own_key else f"{where}: {msg}") from None


def from_dict(data: Any) -> RecipeConfig:
    return _load_dataclass(RecipeConfig, data, "")


def load_recipe(path: str | Path, **overrides: Any) -> RecipeConfig:
    """Read a recipe file (or a name in ``pipelines/``); ``overrides`` are dotted keys, e.g. ``data.frames``
    (a number picks an item of a list: ``data.degradation.mix.0.share``)."""
    path = find_recipe(path)
    data = read_mapping(path, "recipe")
    # a file-level marker, not a training setting (left out of the config that checkpoints store)
    if catalog.kind_of(data, path, default="recipe") != "recipe":
        raise VsrError(f"{path} is a restoration preset (kind: preset), not a training recipe; "
                       "use it with vsr upscale --preset")
    data.pop("kind", None)
    for dotted, value in overrides.items():
        node: Any = data
        *parents, last = dotted.split(".")
        for key in parents:
            index = _index(node, key, dotted, path)
            if isinstance(node, dict):
                node.setdefault(index, {})
            node = node[index]
        node[_index(node, last, dotted, path)] = value
    try:
        return from_dict(data)
    except VsrError as e:
        raise VsrError(f"recipe {path}: {e}") from None


def _index(node: Any, key: str, dotted: str, path: Path) -> str | int:
    """Where ``key`` points in a recipe being overridden: an item number of a list, or a key of a mapping."""
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return int(key)
    if isinstance(node, dict):
        return key
    raise VsrError(f"recipe {path}: cannot set {dotted}: {key} is not a key or item number there")


def find_recipe(name: str | Path) -> Path:
    path = Path(name).expanduser()
    if path.suffix in (".yml", ".yaml") or path.exists():
        if not path.is_file():
            raise VsrError(f"recipe {path} does not exist")
        return path
    return catalog.find(str(name), "recipe")


def to_dict(cfg: Any) -> Any:
    """Plain, YAML/JSON-safe form of a config (stored in checkpoints: the resolved recipe)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg
