"""Model registry (timm style): `@register_model` entrypoints that only fix hyper-parameters, each with a little
metadata (timm's `default_cfgs`), so callers ask the registry what a model is instead of testing its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medseg.nets.base import SegmentationModel


@dataclass(frozen=True)
class ModelInfo:
    """What callers may ask about a registered model without building it.

    `family`: shared code of all sizes (transunet3d, swinunet3d, segresnet, ...). `cross_modal`: whether the model
    defaults to per-modality encoders with cross-modal attention (and can mask missing modalities).
    `img_size_kwarg`: the model lays out learned position embeddings for a patch size passed as `img_size`.
    `test_kwargs` / `test_size`: the smallest configuration and cubic input size that exercise the family's code,
    for the shared test battery.
    """

    name: str
    family: str
    cross_modal: bool = False
    img_size_kwarg: bool = False
    test_kwargs: dict[str, Any] = field(default_factory=dict)
    test_size: int = 32


_MODELS: dict[str, tuple[Callable[..., SegmentationModel], ModelInfo]] = {}


def register_model(
    *,
    family: str,
    cross_modal: bool = False,
    img_size_kwarg: bool = False,
    test_kwargs: dict[str, Any] | None = None,
    test_size: int = 32,
) -> Callable[[Callable[..., SegmentationModel]], Callable[..., SegmentationModel]]:
    """Register an entrypoint under its function name, with its metadata."""

    def deco(fn: Callable[..., SegmentationModel]) -> Callable[..., SegmentationModel]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__} registered twice")
        info = ModelInfo(fn.__name__, family, cross_modal, img_size_kwarg, dict(test_kwargs or {}), test_size)
        _MODELS[fn.__name__] = (fn, info)
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_info(name: str) -> ModelInfo:
    if name not in _MODELS:
        raise KeyError(f"unknown model '{name}'; registered: {', '.join(list_models())}")
    return _MODELS[name][1]


def create_model(name: str, **overrides) -> SegmentationModel:
    """Build a registered model; keyword overrides replace the entrypoint's defaults."""
    if name not in _MODELS:
        raise KeyError(f"unknown model '{name}'; registered: {', '.join(list_models())}")
    return _MODELS[name][0](**overrides)
