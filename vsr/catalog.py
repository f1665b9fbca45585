"""What ``pipelines/`` ships: training recipes (``vsr train``, ``vsr finetune``) and restoration presets
(``vsr upscale --preset``), told apart by the ``kind`` a file declares: ``kind: recipe`` or ``kind: preset``."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from .errors import VsrError
from .yamlfile import read_mapping

KINDS = ("preset", "recipe")


def folder() -> Path:
    """Where the shipped presets and recipes are (the installed ``vsr.pipelines``)."""
    return Path(str(resources.files("vsr.pipelines")))


def kind_of(data: dict[str, Any], path: Path, default: str | None = None) -> str | None:
    """The ``kind`` a file declares, checked (``default`` where it declares none)."""
    kind = data.get("kind", default)
    if kind is not None and kind not in KINDS:
        raise VsrError(f"{path}: kind: expected {' or '.join(KINDS)}, got {kind!r}")
    return kind


def _declared(path: Path) -> str | None:
    return kind_of(read_mapping(path, "pipelines file"), path)


def names(kind: str) -> list[str]:
    """The names of the shipped files of one kind."""
    return sorted(p.stem for p in folder().glob("*.yml") if _declared(p) == kind)


def find(name: str, kind: str) -> Path:
    """The shipped file of this name and kind; an unknown name, or one of another kind, is an error that lists
    the shipped files of this kind."""
    path = folder() / f"{name}.yml"
    if not path.is_file() or _declared(path) != kind:
        raise VsrError(f"unknown {kind} {name!r}; shipped: {', '.join(names(kind)) or 'none'} (or give a .yml path)")
    return path
