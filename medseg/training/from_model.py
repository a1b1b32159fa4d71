"""Runs that start from another model: a distillation teacher, or a source network pruned and fine-tuned."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medseg.config import ExperimentConfig, ModelConfig
from medseg.core import Case, Task
from medseg.errors import ConfigError
from medseg.inference.model_source import ModelRef
from medseg.io.nifti import read_affine
from medseg.nets import SegmentationModel, create_model
from medseg.nets.pruning import prune_channels, structure_of
from medseg.transforms.geometry import ras_spacing
from medseg.transforms.preprocess import PreprocessPlan
from medseg.transforms.resample import needs_resampling


def same_network_input(a: PreprocessPlan, b: PreprocessPlan, cases: Sequence[Case]) -> bool:
    """Whether two plans turn `cases` into the same network input: equal, or differing only in target spacings
    that neither applies to these cases (a native-spacing model and a 1 mm plan on 1 mm BraTS cases)."""
    if a == b:
        return True
    if (a.crop_foreground, a.intensity) != (b.crop_foreground, b.intensity):
        return False
    spacings = [ras_spacing(read_affine(c)) for c in cases]
    return not any(needs_resampling(s, p.spacing) for s in spacings for p in (a, b))


def check_compatible(source: ModelRef, task: Task, plan: PreprocessPlan, cases: Sequence[Case], role: str) -> None:
    """One-line errors when a `role` model (teacher, pruning source) does not fit the run's data (`cases`): other
    channels, regions or preprocessing."""
    b, ref = source.bundle, source.ref
    if list(b.channels) != list(task.channels):
        raise ConfigError(
            f"{role} {ref} reads channels {b.channels}, the data has {list(task.channels)}",
            hint=f"use data with the {role}'s channels, in its order",
        )
    if b.scheme != task.scheme:
        kinds = [" (softmax classes)" if s.exclusive else "" for s in (b.scheme, task.scheme)]
        raise ConfigError(
            f"{role} {ref} predicts {sorted(b.scheme.regions)}{kinds[0]}, the task {sorted(task.scheme.regions)}"
            f"{kinds[1]}",
            hint=f"the {role} must predict the task's regions",
        )
    if not same_network_input(b.preprocess, plan, cases):
        raise ConfigError(
            f"{role} {ref} was trained on other preprocessing ({b.preprocess.to_json()}) than this run's plan "
            f"({plan.to_json()})",
            hint=f"set data.spacing / data.intensity to the {role}'s (see `medseg runs show`)",
        )


# A pruned model whose best validation Dice is further than this below its source's is reported as a loss.
PRUNE_DICE_TOLERANCE = 0.02


def pruning_loss(pruned_dice: float, source_dice: float) -> float | None:
    """The validation Dice a pruning cost, when beyond PRUNE_DICE_TOLERANCE (None: the fine-tuning won it back)."""
    lost = source_dice - pruned_dice
    return lost if lost > PRUNE_DICE_TOLERANCE else None


def link_tags(source: ModelRef, role: str) -> dict[str, str]:
    """MLflow tags linking a run to the model it started from (`medseg.teacher`, `medseg.pruned_from`)."""
    return {f"medseg.{role}": source.ref, **({f"medseg.{role}_run_id": source.run_id} if source.run_id else {})}


def source_settings(cfg: ExperimentConfig, source: ModelRef) -> ExperimentConfig:
    """The run's config with the pruning source's network, patch size and inference settings (the pruned network
    must be rebuilt from the source's entrypoint and kwargs)."""
    b = source.bundle
    kwargs = {k: v for k, v in b.model_kwargs.items() if k not in ("in_channels", "out_channels")}
    return cfg.model_copy(
        update={
            "model": ModelConfig(name=b.model_name, kwargs=kwargs),
            "train": cfg.train.model_copy(update={"patch_size": tuple(b.patch_size)}),
            "infer": b.infer,
        }
    )


def pruned_start(source: ModelRef, amount: float) -> tuple[SegmentationModel, dict]:
    """The source network with `amount` of its channels removed, and the layout record its bundles carry."""
    b = source.bundle
    if b.structure:
        raise ConfigError(f"{source.ref} is already pruned", hint="prune the original model with a larger --amount")
    model = b.build_model()
    example = torch.randn(1, len(b.channels), *b.patch_size)
    try:
        pruned = prune_channels(model, example, amount)
    except ValueError as exc:
        raise ConfigError(
            f"{source.ref}: {exc}", hint="structured pruning supports the convolutional families"
        ) from None
    with torch.device("meta"):
        reference = create_model(b.model_name, **b.model_kwargs)
    structure = structure_of(pruned, reference)
    if not structure:
        raise ConfigError(
            f"--amount {amount} removes no channel of {source.ref} (its layer groups are too narrow for that share)",
            hint="use a larger --amount",
        )
    return pruned, structure
