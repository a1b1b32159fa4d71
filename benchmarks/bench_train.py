"""Training throughput through the real `medseg train` code path, and the training data pipeline against the
MONAI pipelines a user would write (`Dataset` decoding NIfTI every time, `CacheDataset` holding the
deterministic part in memory, `PersistentDataset` keeping it on disk), with the same augmentations on both sides.

    python benchmarks/bench_train.py --quick                          # 2-core CPU, a few minutes
    python benchmarks/bench_train.py --device cuda --model transunet3d_base --patch 128 --workers 8

Training: `train_task` (the code behind `medseg train`) with tracking off, validating only after the last
epoch; samples/s and seconds per epoch of the last epoch (the first includes start-up), peak RSS, peak GPU
memory of that training epoch on CUDA. DataLoader workers start afresh each epoch (per-epoch seeding keeps
`--resume` exact), so short epochs with many workers pay their start-up: use enough `--samples`.
Data: random training patches/s through a DataLoader, medseg (preprocessed cache, cold = first epoch building
the cache, warm = memory-mapped hits) against MONAI `Dataset`, `CacheDataset` and `PersistentDataset` with the
same patch sampling and augmentations.

Last line: `train_samples_per_s=<x> data_speedup_vs_monai_dataset=<y> data_speedup_vs_monai_cachedataset=<z>`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import monai_reference
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, list_data_collate

from medseg.data.manifest import save_manifest
from medseg.data.validate import scan_dataset
from medseg.memory import keep_freed_memory, peak_rss_bytes
from medseg.nets import model_info
from medseg.pipelines import get_task
from medseg.pipelines.brats import SCHEME, write_synthetic_dataset
from medseg.training.data import prepare_cache, train_loader
from medseg.transforms.preprocess import PreprocessPlan
from medseg.workflows.train import TrainRequest, run_training

ROOT = Path(__file__).resolve().parents[1]


def patches_per_s(loader, epochs: int) -> float:
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += batch["image"].shape[0]
    return n / (time.perf_counter() - t0)


def data_pipeline(cases, work: Path, a) -> dict[str, float]:
    """Patches/s for medseg cold and warm cache, MONAI Dataset and CacheDataset (build time reported apart)."""
    patch = [a.patch] * 3

    def medseg_loader():
        items = prepare_cache(cases, SCHEME, work / "cache", PreprocessPlan())
        return train_loader(items, patch, a.batch, a.samples, 2.0, a.workers, 0)

    t0 = time.perf_counter()
    cold = patches_per_s(medseg_loader(), 1)  # includes decoding and writing every case once
    cold_s = time.perf_counter() - t0
    warm = patches_per_s(medseg_loader(), a.data_epochs)
    items = [{"image": list(c.images), "label": c.label} for c in cases]
    ref = monai_reference(cases, a.patch, a.samples)
    plain = DataLoader(Dataset(items, ref), batch_size=a.batch, num_workers=a.workers, collate_fn=list_data_collate)
    monai_plain = patches_per_s(plain, a.data_epochs)
    t0 = time.perf_counter()
    cached_ds = CacheDataset(items, ref, num_workers=max(a.workers, 1), progress=False)
    build_s = time.perf_counter() - t0
    cached = DataLoader(cached_ds, batch_size=a.batch, num_workers=a.workers, collate_fn=list_data_collate)
    monai_cached = patches_per_s(cached, a.data_epochs)
    # MONAI's own disk cache: the deterministic prefix (load .. pad) saved as .pt files on the first epoch.
    persistent_ds = PersistentDataset(items, ref, cache_dir=work / "monai_persistent")
    persistent = DataLoader(persistent_ds, batch_size=a.batch, num_workers=a.workers, collate_fn=list_data_collate)
    t0 = time.perf_counter()
    persistent_cold = patches_per_s(persistent, 1)
    persistent_cold_s = time.perf_counter() - t0
    persistent_warm = patches_per_s(persistent, a.data_epochs)
    return {
        "medseg_cold": cold,
        "medseg_cold_s": cold_s,
        "medseg_warm": warm,
        "monai_dataset": monai_plain,
        "monai_cachedataset": monai_cached,
        "cachedataset_build_s": build_s,
        "monai_persistent_cold": persistent_cold,
        "monai_persistent_cold_s": persistent_cold_s,
        "monai_persistent": persistent_warm,
    }


def training(work: Path, a) -> dict[str, float]:
    manifest, _ = scan_dataset(work / "data", get_task("brats"), folds=max(2, min(5, a.cases)))
    save_manifest(manifest, work / "m.json")
    overrides = [
        f"model.name={a.model}",
        f"model.kwargs={{img_size: {a.patch}}}" if model_info(a.model).img_size_kwarg else "model.kwargs={}",
        f"train.patch_size=[{a.patch},{a.patch},{a.patch}]",
        f"train.batch_size={a.batch}",
        f"train.samples_per_volume={a.samples}",
        f"train.epochs={a.epochs}",
        f"train.val_every={a.epochs + 1}",
        "train.warmup_epochs=0",
        "train.overlays=0",
        f"data.num_workers={a.workers}",
        f"data.cache_dir={work / 'train_cache'}",
    ]
    request = TrainRequest(
        "brats",
        config="brats_smoke",
        overrides=overrides,
        manifest=work / "m.json",
        fold="all",
        device=a.device,
        tracking=False,
        out=work / "runs",
    )
    last = run_training(request).result.history[-1]
    out = {"samples_per_s": last["train_samples_per_s"], "epoch_s": last["epoch_time_s"]}
    if "gpu_mem_peak_gb" in last:  # of the training epoch alone (the last epoch also validates)
        out["gpu_peak_gb"] = last["gpu_mem_peak_gb"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155])
    p.add_argument("--model", default="transunet3d_tiny")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--samples", type=int, default=2, help="patches per case per epoch")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (the last one is reported)")
    p.add_argument("--data-epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="4 cases of 128x128x96, tiny model, patch 32")
    p.add_argument("--no-keep-freed", action="store_true", help="leave glibc's malloc defaults (for comparison)")
    a = p.parse_args()
    if not a.no_keep_freed:
        keep_freed_memory()  # as every `medseg` command does
    if a.quick:
        a.cases, a.shape, a.patch, a.samples = 4, [128, 128, 96], 32, 4
    work = Path(tempfile.mkdtemp(prefix="bench_train-"))
    try:
        write_synthetic_dataset(work / "data", a.cases, "brats2021", tuple(a.shape), seed=0)
        cases = [c.case for c in scan_dataset(work / "data", get_task("brats"), folds=2)[0].cases]
        data = data_pipeline(cases, work, a)
        train = training(work, a)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rss = peak_rss_bytes() / 1e9
    shape = "x".join(map(str, a.shape))
    print(
        f"{a.cases} cases of {shape}, patch {a.patch}^3, batch {a.batch}, {a.samples} patches/case, "
        f"workers {a.workers}, device {a.device}, model {a.model}"
    )
    print(
        f"data: medseg cache cold {data['medseg_cold']:.1f} patches/s (first epoch, {data['medseg_cold_s']:.1f} s "
        f"incl. building the cache), warm {data['medseg_warm']:.1f} patches/s; MONAI Dataset "
        f"{data['monai_dataset']:.1f} patches/s; MONAI CacheDataset {data['monai_cachedataset']:.1f} patches/s "
        f"(+{data['cachedataset_build_s']:.1f} s to build, held in RAM); MONAI PersistentDataset "
        f"{data['monai_persistent']:.1f} patches/s (cold {data['monai_persistent_cold']:.1f}, "
        f"{data['monai_persistent_cold_s']:.1f} s incl. writing its cache)"
    )
    gpu = f", peak GPU memory {train['gpu_peak_gb']:.1f} GB" if "gpu_peak_gb" in train else ""
    print(
        f"training: {train['samples_per_s']:.2f} samples/s, {train['epoch_s']:.1f} s/epoch "
        f"({a.cases * a.samples} samples){gpu}; peak RSS {rss:.2f} GB (whole benchmark)"
    )
    print(
        f"train_samples_per_s={train['samples_per_s']:.2f} "
        f"data_speedup_vs_monai_dataset={data['medseg_warm'] / data['monai_dataset']:.2f} "
        f"data_speedup_vs_monai_cachedataset={data['medseg_warm'] / data['monai_cachedataset']:.2f} "
        f"data_speedup_vs_monai_persistent={data['medseg_warm'] / data['monai_persistent']:.2f}"
    )


if __name__ == "__main__":
    main()
