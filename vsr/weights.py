"""Reading and writing network weights without ever executing code from a file."""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .arch import ARCHS, ModelDescriptor, StateDict, construct, get_arch
from .errors import VsrError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of a safetensors or PyTorch file, unwrapped from the usual containers."""
    path = Path(path)
    if not path.is_file():
        raise VsrError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise VsrError(f"weights file {path} is empty")
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        if not (head.startswith(b"PK") or head[:1] == b"\x80"):
            # not a zip (torch>=1.6) nor a legacy pickle: maybe safetensors under another name
            return load_file(str(path))
        with warnings.catch_warnings():  # "pickle protocol N" and the like: the refusal below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # PyTorch names the offending global on a line of its own ("... unsupported GLOBAL posix.system ...")
        first = next((ln for ln in lines if "GLOBAL" in ln), lines[0] if lines else "unsupported content")
        raise VsrError(f"refusing to load {path}: it holds more than tensors and could run code "
                       f"({first[:120]}); convert it to .safetensors with the tool that made it") from None
    except (SafetensorError, RuntimeError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise VsrError(f"cannot read weights from {path}: {str(e).splitlines()[0][:160]}") from None
    return unwrap(obj, path)


def unwrap(obj: Any, path: Path | str = "checkpoint") -> StateDict:
    if isinstance(obj, dict):
        for key in ("params_ema", "params", "state_dict", "model", "generator"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise VsrError(f"{path} holds no state dict (expected a mapping of names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise VsrError(f"{path} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def detect(sd: StateDict, source: str = "state dict", **overrides: Any) -> ModelDescriptor:
    """Recognise the architecture and its hyperparameters, build it and load the weights."""
    for arch in ARCHS:
        try:
            found = arch.detect(sd)
            if found is None:
                continue
            params, converted = found
            params, model = construct(arch, {**params, **overrides})
        except ValueError as e:  # shapes no network has, parameters it does not take or cannot do
            raise VsrError(f"{source}: {e}; the file (or its model card's params) does not describe a "
                           "usable network") from None
        expected = model.state_dict()
        for k, v in converted.items():
            if k in expected and v.shape != expected[k].shape:
                raise VsrError(f"{source} looks like {arch.name} but tensor {k} has shape {tuple(v.shape)}, "
                               f"expected {tuple(expected[k].shape)}")
        missing, unexpected = model.load_state_dict(converted, strict=False)
        if missing or unexpected:
            raise VsrError(f"{source} looks like {arch.name} but does not fit it: "
                           f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        model.eval().requires_grad_(False)
        return arch.describe(params, model)
    sample = ", ".join(list(sd)[:4])
    raise VsrError(f"{source}: unknown architecture (keys {sample}, ...); "
                   f"supported: {', '.join(a.name for a in ARCHS)}")


def load(path: str | Path, **overrides: Any) -> ModelDescriptor:
    return detect(read_state_dict(path), str(path), **overrides)


def save(desc_or_sd: ModelDescriptor | StateDict, path: str | Path, *, dtype: torch.dtype | None = None,
         metadata: dict[str, str] | None = None) -> None:
    """Write safetensors atomically (temporary file beside the target, then rename)."""
    sd = desc_or_sd.model.state_dict() if isinstance(desc_or_sd, ModelDescriptor) else desc_or_sd
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
          for k, v in sd.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(sd, str(tmp), metadata=metadata)
    tmp.replace(path)


__all__ = ["read_state_dict", "unwrap", "detect", "load", "save", "get_arch", "WEIGHT_SUFFIXES"]
