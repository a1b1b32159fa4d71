"""What a training run is given and what it returns, and how it reports progress (no UI, no MLflow here)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from medseg.config import ExperimentConfig, RegionRule
from medseg.core import Task
from medseg.errors import ConfigError
from medseg.io.bundle import ModelBundle
from medseg.nets import SegmentationModel, create_model
from medseg.runtime import Runtime
from medseg.transforms.preprocess import PreprocessPlan


class ProgressHooks(Protocol):
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, loss: float) -> None: ...
    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def run_started(self, run_id: str | None, out_dir: Path) -> None: ...


class SilentHooks:
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def run_started(self, run_id: str | None, out_dir: Path) -> None:
        pass


def network_kwargs(cfg: ExperimentConfig, task: Task) -> dict:
    return {"in_channels": len(task.channels), "out_channels": task.scheme.out_channels} | dict(cfg.model.kwargs)


def configured_network(cfg: ExperimentConfig, task: Task, device: str | None = None) -> SegmentationModel:
    """The configured network, built on `device` ("meta": only its shapes, to check a config in milliseconds); a bad
    name, keyword or patch size is a one-line config error."""
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            model = create_model(cfg.model.name, **network_kwargs(cfg, task))
        model.check_input_shape(torch.zeros(1, len(task.channels), *cfg.train.patch_size, device="meta"))
    except (KeyError, ValueError, TypeError) as exc:
        why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # a KeyError's str() adds quotes
        raise ConfigError(
            f"model '{cfg.model.name}': {why}", hint="check model.name, model.kwargs and train.patch_size"
        ) from None
    return model


def check_network_config(cfg: ExperimentConfig, task: Task) -> None:
    """`configured_network`'s checks before any case is cached; a network that cannot be built on the meta device
    (MONAI's SwinUNETR calls .item() at init) is built on the CPU for them (a second or so)."""
    try:
        configured_network(cfg, task, "meta")
    except (RuntimeError, NotImplementedError) as exc:
        if "meta" not in str(exc):
            raise
        configured_network(cfg, task)


@dataclass
class TrainSpec:
    """Everything a training run needs, already validated and resolved by the caller."""

    cfg: ExperimentConfig
    task: Task
    label_map: dict[str, int]
    train_items: list[dict]
    val_items: list[dict]
    norm_stats: list[list[float]]
    out_dir: Path
    device: torch.device
    world: Runtime = field(default_factory=Runtime)
    resume: dict | None = None
    plan: PreprocessPlan = field(default_factory=PreprocessPlan)
    start: SegmentationModel | None = None  # a network to train from instead of a fresh build (a pruned model)
    structure: dict = field(default_factory=dict)  # `start`'s pruned layout, carried into every bundle
    data: dict = field(default_factory=dict)  # the manifest digest and fold trained on, checked by `--resume`

    @property
    def model_kwargs(self) -> dict:
        return network_kwargs(self.cfg, self.task)

    def build_network(self) -> SegmentationModel:
        """The configured network; a bad name, keyword or patch size is a one-line config error."""
        return self.start if self.start is not None else configured_network(self.cfg, self.task)

    def bundle(self, model: torch.nn.Module) -> ModelBundle:
        """The model's current weights (copied to the CPU) with everything inference needs."""
        return ModelBundle(
            model_name=self.cfg.model.name,
            model_kwargs=self.model_kwargs,
            state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            task=self.task.name,
            channels=list(self.task.channels),
            scheme=self.task.scheme,
            label_map=self.label_map,
            patch_size=list(self.cfg.train.patch_size),
            norm_stats=self.norm_stats,
            preprocess=self.plan,
            infer=self.cfg.infer,
            structure=self.structure,
        )


@dataclass
class TrainResult:
    """`best_bundle`: the best epoch's weights as inference will load them (post-processing included once chosen);
    `best_val_cases`: that epoch's validation masks, so choosing the post-processing needs no second pass."""

    best_dice: float
    best_epoch: int
    epochs_run: int
    history: list[dict]
    best_path: Path
    last_path: Path
    best_bundle: ModelBundle | None = None
    best_val_cases: list | None = None  # the best epoch's validation masks (`ScoredCase`), when kept
    model_uri: str | None = None
    aliases: list[str] = field(default_factory=list)
    postprocess: dict[str, RegionRule] = field(default_factory=dict)
    source_dice: float | None = None  # a pruned run's source, unpruned, on the same validation cases
