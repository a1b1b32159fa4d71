"""DDP plumbing: the process group of a torchrun runtime, rank-0 helpers, metric reduction."""

from __future__ import annotations

import torch
import torch.distributed as dist

from medseg.runtime import Runtime


def init_world(device_type: str, runtime: Runtime) -> Runtime:
    """Join the process group of a distributed runtime (torchrun); NCCL on CUDA, gloo on CPU. Returns the ranks as
    the process group has them (a plain process: rank 0 of 1)."""
    if not runtime.distributed:
        return Runtime()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(runtime.local_rank)
    return Runtime(dist.get_rank(), dist.get_world_size(), runtime.local_rank)


def mean_across(values: dict[str, float], world: Runtime) -> dict[str, float]:
    """Average scalar metrics over ranks (identity without DDP)."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: float(v) / world.world_size for k, v in zip(keys, t.cpu().tolist(), strict=True)}


def any_across(flag: bool, world: Runtime) -> bool:
    """True on every rank when any rank says so: decisions taken on each rank's own clock (the time budget) must
    agree, or one rank leaves the loop while the others wait in the next all-reduce."""
    return mean_across({"flag": float(flag)}, world)["flag"] > 0


def barrier(world: Runtime) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: Runtime) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
