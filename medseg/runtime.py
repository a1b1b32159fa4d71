"""Where this process runs: its torchrun rank and the compute device. The only reader of torchrun's variables.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain process is rank 0 of 1. Workflows read the runtime once and
pass it down (training's process group, prediction's shard, the CUDA device of this rank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from medseg.errors import MedsegError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Runtime:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current_runtime() -> Runtime:
    """The runtime torchrun describes in the environment."""
    env = os.environ
    return Runtime(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))


def resolve_device(name: str, runtime: Runtime | None = None) -> torch.device:
    """`auto` / `cpu` / `cuda` -> a device; on CUDA, this rank's GPU (LOCAL_RANK) under torchrun."""
    if name not in DEVICES:
        raise MedsegError(f"unknown device '{name}'", hint="use cpu, cuda or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise MedsegError("--device cuda requested but no CUDA device is available", hint="use --device cpu or auto")
    if name == "cuda":
        return torch.device("cuda", (runtime or current_runtime()).local_rank)
    return torch.device("cpu")
