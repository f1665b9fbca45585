"""Reading the project's YAML files (model cards, presets, recipes): safe_load only, one-line errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import VsrError


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; ``what`` names it in errors ("recipe", "model card"...)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise VsrError(f"{what} {path} is not valid YAML: {' '.join(str(e).split())[:160]}") from None
    if not isinstance(data, dict):
        raise VsrError(f"{what} {path}: expected a mapping of settings, got {type(data).__name__}")
    return data
