"""Task recipes: one `Task` per dataset family, looked up by name; nothing outside a recipe switches on a task name.

A recipe is a factory `f(data_dir, channels, label_map) -> Task`: scanning builds the task from a data folder,
training from its manifest, prediction from the model bundle's channels and label map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from medseg.core import Task
from medseg.data.manifest import Manifest
from medseg.errors import MedsegError

TaskFactory = Callable[[Path | None, Sequence[str] | None, dict[str, int] | None], Task]
_TASKS: dict[str, TaskFactory] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a task factory `f(data_dir | None, channels | None, label_map | None) -> Task` under `name`."""

    def deco(fn: TaskFactory) -> TaskFactory:
        if name in _TASKS:
            raise ValueError(f"task {name} registered twice")
        _TASKS[name] = fn
        return fn

    return deco


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def _factory(name: str) -> TaskFactory:
    if name not in _TASKS:
        raise MedsegError(f"unknown task '{name}'", hint=f"choose one of {', '.join(list_tasks())}")
    return _TASKS[name]


def get_task(name: str, data_dir: str | Path | None = None) -> Task:
    """The task `name` for scanning `data_dir` (generic tasks read their description from it)."""
    return _factory(name)(Path(data_dir) if data_dir else None, None, None)


def task_for_manifest(name: str, manifest: Manifest) -> Task:
    """The task a manifest was scanned with, rebuilt from the channels and label map it stores."""
    if name != manifest.task:
        raise MedsegError(
            f"manifest was scanned for task '{manifest.task}', not '{name}'",
            hint=f"use `medseg train {manifest.task}`",
        )
    return _factory(name)(None, manifest.channels, manifest.label_map)


def task_for_model(name: str, channels: Sequence[str], label_map: dict[str, int]) -> Task:
    """The task of a trained model (its bundle's task name, channel order and label map)."""
    return _factory(name)(None, channels, label_map)


from medseg.pipelines import brats, generic  # noqa: E402, F401  (registration side effect)
