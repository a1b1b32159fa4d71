"""DDP plumbing: the process group of a torchrun runtime, rank-0 helpers, metric reduction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from medseg.runtime import Runtime


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(device_type: str, runtime: Runtime) -> World:
    """Join the process group of a distributed runtime (torchrun); NCCL on CUDA, gloo on CPU."""
    if not runtime.distributed:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(runtime.local_rank)
    return World(dist.get_rank(), dist.get_world_size(), runtime.local_rank)


def mean_across(values: dict[str, float], world: World) -> dict[str, float]:
    """Average scalar metrics over ranks (identity without DDP)."""
    if world.size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: float(v) / world.size for k, v in zip(keys, t.cpu().tolist(), strict=True)}


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
