"""Core types that cross layers: a case on disk, a label scheme, a layout, a task and a case read into memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Case:
    """One subject: channel files in the task's canonical order, optional label, its native label map.

    `channel_index[i]` selects a volume of a 4D file (MSD layout) or is None for a 3D file.
    `label_map` maps canonical class names to the values used in this case's files.
    """

    id: str
    images: tuple[str, ...]
    channel_index: tuple[int | None, ...]
    label: str | None
    label_map: dict[str, int]
    layout: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "images": list(self.images),
            "channel_index": list(self.channel_index),
            "label": self.label,
            "label_map": self.label_map,
            "layout": self.layout,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Case:
        return cls(
            id=d["id"],
            images=tuple(d["images"]),
            channel_index=tuple(d["channel_index"]),
            label=d.get("label"),
            label_map={k: int(v) for k, v in d["label_map"].items()},
            layout=d["layout"],
        )


@dataclass(frozen=True)
class LabelScheme:
    """Overlapping evaluated regions built from canonical classes, and how to paint them back.

    `regions` maps region name -> classes it contains (order = model output channels).
    `paint_order` lists (region, class): painting each region's voxels with that class's label value,
    in order, rebuilds a label map from thresholded regions (nnU-Net's `regions_class_order`).
    `exclusive`: the regions are mutually exclusive classes (a plain label map, e.g. CT organs), predicted as
    softmax over background + regions and decided by argmax; otherwise overlapping sigmoid regions (BraTS).
    """

    classes: tuple[str, ...]
    regions: dict[str, tuple[str, ...]]
    paint_order: tuple[tuple[str, str], ...]
    exclusive: bool = False

    @property
    def region_names(self) -> list[str]:
        return list(self.regions)

    @property
    def out_channels(self) -> int:
        """Network output channels: one per region, plus background for softmax classes."""
        return len(self.regions) + int(self.exclusive)


@dataclass(frozen=True)
class Layout:
    """A way cases are laid out on disk; `find_cases` returns cases (each with its label map), or [] when the
    layout does not apply."""

    name: str
    find_cases: Callable[[Path], list[Case]]


@dataclass(frozen=True)
class Task:
    """A dataset family and everything generic code must not guess about it.

    `layouts`: where labelled cases are found (scan, train, evaluate); `prediction_layouts`: what a trained model
    predicts from. `default_config`: the shipped config `medseg train` uses without `--config`.
    `overlay_channels`: channels shown in overlay pictures. `empty_hd95_mm`: HD95 when exactly one of prediction
    and truth is empty (BraTS: 373.13, its image diagonal); None uses each case's own image diagonal.
    """

    name: str
    channels: tuple[str, ...]
    layouts: tuple[Layout, ...]
    scheme: LabelScheme
    prediction_layouts: tuple[Layout, ...]
    default_config: str
    overlay_channels: tuple[str, ...]
    empty_hd95_mm: float | None = None


def scheme_to_json(scheme: LabelScheme) -> dict[str, Any]:
    return {
        "classes": list(scheme.classes),
        "regions": {k: list(v) for k, v in scheme.regions.items()},
        "paint_order": [list(p) for p in scheme.paint_order],
        "exclusive": scheme.exclusive,
    }


def scheme_from_json(d: dict[str, Any]) -> LabelScheme:
    return LabelScheme(
        classes=tuple(d["classes"]),
        regions={k: tuple(v) for k, v in d["regions"].items()},
        paint_order=tuple((a, b) for a, b in d["paint_order"]),
        exclusive=bool(d.get("exclusive", False)),  # bundles from before softmax classes: sigmoid regions
    )


@dataclass
class CaseVolumes:
    """A case read into memory: image (M, X, Y, Z) float32, label (X, Y, Z) int16 or None, affine (4, 4)."""

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    missing: tuple[int, ...] = ()

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))
