"""Training and validation data: cached preprocessed volumes -> MONAI random patch transforms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from monai.data import DataLoader, Dataset, list_data_collate
from monai.transforms import (
    Compose,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)
from torch.utils.data import DistributedSampler

from medseg.core import Case, LabelScheme
from medseg.data.cache import ensure_cached, read_entry
from medseg.errors import DataError
from medseg.training.distill import TEACHER_KEY
from medseg.transforms.preprocess import PreprocessPlan


class LoadCachedd(MapTransform):
    """Read a cache entry (memory-mapped .npy) into `image` (M, ...) float32 and `label` (R, ...) uint8; with a
    teacher (distillation) `label` is float32 (R + C, ...): the regions, then the teacher's C logits."""

    def __init__(self) -> None:
        super().__init__(keys=["entry"])

    def __call__(self, data: dict) -> dict:
        pre = read_entry(Path(data["entry"]))
        if pre.regions is None:
            raise DataError("case has no label", case=data["id"], hint="training needs labelled cases")
        regions = np.array(pre.regions)
        # One foreground channel for patch sampling: MONAI reads a multi-channel label as one-hot and drops its
        # first channel as background, which would never centre a patch on a first-region-only voxel.
        fg = regions.any(0, keepdims=True)
        if TEACHER_KEY in data:  # distillation: the teacher's logits ride along as extra label channels
            regions = np.concatenate([regions.astype(np.float32), np.load(data[TEACHER_KEY]).astype(np.float32)])
        return {"id": data["id"], "image": np.array(pre.image), "label": regions, "fg": fg}


def train_transforms(patch_size: Sequence[int], samples: int, pos_neg_ratio: float) -> Compose:
    """Foreground-biased random patches, flips and intensity scale/shift (MONAI).

    Negative patches are centred inside the image (a voxel nonzero in some channel), not in the air around it:
    healthy tissue that looks like tumour (CSF, vessels, bright grey matter) is what a model must learn to leave
    alone, and air teaches it nothing.
    """
    keys = ["image", "label"]
    pos = pos_neg_ratio / (1 + pos_neg_ratio)
    return Compose(
        [
            LoadCachedd(),
            SpatialPadd([*keys, "fg"], spatial_size=list(patch_size)),
            RandCropByPosNegLabeld(
                keys,
                "fg",
                list(patch_size),
                pos=pos,
                neg=1 - pos,
                num_samples=samples,
                image_key="image",
                image_threshold=0.0,
            ),
            DeleteItemsd("fg"),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
            RandScaleIntensityd("image", factors=0.1, prob=1.0),
            RandShiftIntensityd("image", offsets=0.1, prob=1.0),
            EnsureTyped(keys, track_meta=False),
        ]
    )


def prepare_cache(
    cases: Sequence[Case],
    scheme: LabelScheme,
    cache_dir: str | Path,
    plan: PreprocessPlan,
    on_case: Callable[[Case, bool], None] | None = None,
) -> list[dict]:
    """Make sure every case is cached (decode once); returns dataset items {id, entry}."""
    items = []
    for case in cases:
        entry, hit = ensure_cached(case, scheme, cache_dir, plan)
        items.append({"id": case.id, "entry": str(entry)})
        if on_case:
            on_case(case, hit)
    return items


def train_loader(
    items: list[dict],
    patch_size: Sequence[int],
    batch_size: int,
    samples: int,
    pos_neg_ratio: float,
    num_workers: int,
    seed: int,
    world: tuple[int, int] = (0, 1),
) -> DataLoader:
    """Random-patch loader; with DDP each rank sees a disjoint shard (DistributedSampler)."""
    ds = Dataset(items, train_transforms(patch_size, samples, pos_neg_ratio))
    rank, size = world
    sampler = DistributedSampler(ds, size, rank, shuffle=True, seed=seed) if size > 1 else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=list_data_collate,
        persistent_workers=False,  # fresh workers per epoch, seeded from the per-epoch torch seed
        drop_last=False,
    )
