"""Data pipeline throughput: cases/s to load a preprocessed case, and random training patches/s, with
medseg's preprocessed cache against a plain MONAI pipeline that decodes NIfTI every time.

    python benchmarks/bench_data.py [--cases 6] [--shape 240 240 155] [--patch 128] [--quick]

Prints one machine-readable line: `data_cache_speedup_cases=<x> data_cache_speedup_patches=<y>`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai.data import DataLoader, Dataset, list_data_collate
from monai.transforms import (
    Compose,
    ConvertToMultiChannelBasedOnBratsClassesd,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from medseg.data.cache import ensure_cached, read_entry
from medseg.data.layouts import detect_cases
from medseg.pipelines.brats import LAYOUTS, SCHEME, write_synthetic_dataset
from medseg.training.data import train_loader
from medseg.transforms.preprocess import PreprocessPlan


def monai_reference(cases, patch: int, samples: int) -> Compose:
    """What a MONAI user writes for BraTS 2021 training, decoding the NIfTI files every time."""
    keys = ["image", "label"]
    return Compose(
        [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS"),
            ConvertToMultiChannelBasedOnBratsClassesd("label"),
            CropForegroundd(keys, source_key="image"),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
            SpatialPadd(keys, [patch] * 3),
            RandCropByPosNegLabeld(keys, "label", [patch] * 3, pos=2 / 3, neg=1 / 3, num_samples=samples),
            # The augmentations medseg's training loader applies, so both sides do the same work per patch.
            *(RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)),
            RandScaleIntensityd("image", factors=0.1, prob=1.0),
            RandShiftIntensityd("image", offsets=0.1, prob=1.0),
        ]
    )


def _time_loader(loader, epochs: int) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += batch["image"].shape[0]
    return time.perf_counter() - t0, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155])
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="4 cases of 128x128x96, patch 64")
    a = p.parse_args()
    if a.quick:
        a.cases, a.shape, a.patch = 4, [128, 128, 96], 64
    root = Path(tempfile.mkdtemp())
    write_synthetic_dataset(root / "data", a.cases, "brats2021", tuple(a.shape), seed=0)
    _, cases = detect_cases(root / "data", LAYOUTS)

    # Case loading: first touch (decode + preprocess + write cache) vs cache hit (memory-mapped).
    t0 = time.perf_counter()
    entries = [ensure_cached(c, SCHEME, root / "cache", PreprocessPlan())[0] for c in cases]
    miss = time.perf_counter() - t0
    t0 = time.perf_counter()
    for e in entries:
        pre = read_entry(e)
        np.asarray(pre.image).sum()  # touch the data
    hit = time.perf_counter() - t0
    items = [{"image": list(c.images), "label": c.label} for c in cases]
    ref = monai_reference(cases, a.patch, a.samples)
    load_only = Compose(ref.transforms[:6])
    t0 = time.perf_counter()
    for it in items:
        load_only(dict(it))
    monai_load = time.perf_counter() - t0

    # Training patches through a DataLoader, several epochs.
    cached = train_loader(
        [{"id": c.id, "entry": str(e)} for c, e in zip(cases, entries, strict=True)],
        [a.patch] * 3,
        2,
        a.samples,
        2.0,
        a.workers,
        0,
    )
    t_cached, n_cached = _time_loader(cached, a.epochs)
    plain = DataLoader(Dataset(items, ref), batch_size=2, num_workers=a.workers, collate_fn=list_data_collate)
    t_plain, n_plain = _time_loader(plain, a.epochs)

    shape = "x".join(map(str, a.shape))
    print(f"cases: {a.cases} of {shape}, patch {a.patch}^3, {a.samples} patches/case, workers {a.workers}")
    print(
        f"load a preprocessed case: medseg cache miss {a.cases / miss:.2f} cases/s, cache hit "
        f"{a.cases / hit:.2f} cases/s, MONAI LoadImage..Normalize {a.cases / monai_load:.2f} cases/s"
    )
    print(
        f"training patches: medseg cached {n_cached / t_cached:.1f} patches/s, "
        f"MONAI uncached {n_plain / t_plain:.1f} patches/s"
    )
    print(
        f"data_cache_speedup_cases={monai_load / hit:.1f} data_cache_speedup_patches="
        f"{(n_cached / t_cached) / (n_plain / t_plain):.2f}"
    )


if __name__ == "__main__":
    main()
