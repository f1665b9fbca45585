"""Several processes (``torchrun --nproc_per_node N``): DistributedDataParallel, gloo on CPUs,
nccl on GPUs. Without torchrun's environment everything here is a no-op."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return Dist(rank=rank, world=world, local_rank=local)


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    if not d.enabled:
        return model
    ids = [device.index if device.index is not None else d.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """Average over processes (for logging: every rank reports the same numbers)."""
    if d.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= d.world
    return values


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
