"""Checkpoints: everything needed to continue exactly (weights, optimizers, schedules, EMA, step,
RNG states, the resolved recipe), written atomically; read back with ``weights_only=True``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import VsrError

LATEST = "latest.pt"


def save(folder: Path, state: dict[str, Any], *, step: int, keep: int) -> Path:
    """``folder/step-N.pt`` and ``folder/latest.pt`` (a copy); only the ``keep`` newest step files stay."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)
    latest_tmp = folder / (LATEST + ".partial")
    torch.save(state, latest_tmp)
    os.replace(latest_tmp, folder / LATEST)
    old = sorted(folder.glob("step-*.pt"))[:-keep] if keep > 0 else sorted(folder.glob("step-*.pt"))[:-1]
    for p in old:
        p.unlink(missing_ok=True)
    return path


def load(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise VsrError(f"no checkpoint to resume from: {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise VsrError(f"cannot read checkpoint {path}: {str(e).splitlines()[0][:160]}") from None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
