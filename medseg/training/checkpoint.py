"""Training checkpoints: model bundle + optimiser/scaler/RNG state and history, weights-only loadable.

The learning rate needs no saved state: it is a function of the epoch and the elapsed time in the history."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.io.bundle import ModelBundle, save_checkpoint


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain lists (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_training_checkpoint(
    path: Path,
    bundle: ModelBundle,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    best: float,
    history: list[dict],
    config: dict,
    run_id: str | None,
    data: dict,
) -> None:
    """Everything needed to continue exactly where training stopped; written atomically."""
    save_checkpoint(
        {
            "bundle": bundle.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "epoch": epoch,
            "best": best,
            "history": history,
            "config": config,
            "run_id": run_id,
            "data": data,
            "rng": rng_state(),
        },
        path,
    )
