"""Shared fixtures: tiny synthetic datasets built on the fly (no binary fixtures)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY_SHAPE = (48, 48, 32)


@pytest.fixture(scope="session")
def brats2021_dir(tmp_path_factory) -> Path:
    from pipelines.brats import write_synthetic_dataset

    out = tmp_path_factory.mktemp("brats2021")
    write_synthetic_dataset(out, 4, "brats2021", TINY_SHAPE, seed=1)
    return out


@pytest.fixture(scope="session")
def brats2023_dir(tmp_path_factory) -> Path:
    from pipelines.brats import write_synthetic_dataset

    out = tmp_path_factory.mktemp("brats2023")
    write_synthetic_dataset(out, 3, "brats2023", TINY_SHAPE, seed=2)
    return out


@pytest.fixture(scope="session")
def msd_dir(tmp_path_factory) -> Path:
    from pipelines.brats import write_synthetic_dataset

    out = tmp_path_factory.mktemp("msd")
    write_synthetic_dataset(out, 3, "msd", TINY_SHAPE, seed=3)
    return out
