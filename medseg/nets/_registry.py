"""Model registry (timm style): `@register_model` entrypoints that only fix hyper-parameters."""

from __future__ import annotations

from collections.abc import Callable

from medseg.nets.base import SegmentationModel

_MODELS: dict[str, Callable[..., SegmentationModel]] = {}


def register_model(fn: Callable[..., SegmentationModel]) -> Callable[..., SegmentationModel]:
    """Register an entrypoint under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__} registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **overrides) -> SegmentationModel:
    """Build a registered model; keyword overrides replace the entrypoint's defaults."""
    if name not in _MODELS:
        raise KeyError(f"unknown model '{name}'; registered: {', '.join(list_models())}")
    return _MODELS[name](**overrides)
