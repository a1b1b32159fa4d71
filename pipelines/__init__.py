"""Task recipes: one `Task` per dataset family, looked up by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medseg.core import Layout, Task
from medseg.data.manifest import Manifest
from medseg.errors import MedsegError

_TASKS: dict[str, Callable[[Path | None], Task]] = {}


def register_task(name: str):
    """Register a task factory `f(data_dir | None) -> Task` under `name`."""

    def deco(fn: Callable[[Path | None], Task]) -> Callable[[Path | None], Task]:
        _TASKS[name] = fn
        return fn

    return deco


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, data_dir: str | Path | None = None) -> Task:
    """Build the task `name`; generic tasks read their channel/label description from `data_dir`."""
    if name not in _TASKS:
        raise MedsegError(f"unknown task '{name}'", hint=f"choose one of {', '.join(list_tasks())}")
    return _TASKS[name](Path(data_dir) if data_dir else None)


def task_for_manifest(name: str, manifest: Manifest) -> Task:
    """The task a manifest was scanned with; generic tasks are rebuilt from its channels and label map."""
    if name != manifest.task:
        raise MedsegError(
            f"manifest was scanned for task '{manifest.task}', not '{name}'",
            hint=f"use `medseg train {manifest.task}`",
        )
    if name == "generic":
        return generic.task_from_description(manifest.channels, manifest.label_map)
    return get_task(name)


def prediction_layouts(task: str, channels: list[str], label_map: dict[str, int]) -> tuple[Layout, ...]:
    """Input layouts a model of `task` can predict from (its channel order and label convention)."""
    if task == "brats":
        return brats.LAYOUTS
    return generic.prediction_layouts(channels, label_map)


from pipelines import brats, generic  # noqa: E402  (registration side effect)
