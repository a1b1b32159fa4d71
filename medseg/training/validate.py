"""Whole-volume validation with sliding windows; per-case region Dice (BraTS convention)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from medseg.config import InferConfig
from medseg.core import Task
from medseg.data.cache import read_entry
from medseg.evaluation.metrics import dice
from medseg.evaluation.postprocess_search import ScoredCase
from medseg.inference.engines import TorchEngine
from medseg.inference.sliding import sliding_predict
from medseg.io.tables import rows_to_csv
from medseg.tracking import Tracker
from medseg.training.distributed import mean_across
from medseg.training.spec import TrainSpec
from medseg.transforms.labels import region_masks
from medseg.transforms.postprocess import postprocess
from medseg.transforms.preprocess import Preprocessed
from medseg.viz.overlays import overlay_figure, save_png


def predicted_masks(
    model: torch.nn.Module,
    items: Sequence[dict],
    roi: Sequence[int],
    infer: InferConfig,
    device: torch.device,
    amp: bool,
    exclusive: bool = False,
) -> Iterator[tuple[dict, Preprocessed, np.ndarray]]:
    """(item, cached case, raw thresholded region masks (R, x, y, z)) per validation item, model in eval mode."""
    was_training = model.training
    engine = TorchEngine(model, device, bf16=amp and device.type == "cuda")
    try:
        for item in items:
            pre = read_entry(Path(item["entry"]))
            probs = sliding_predict(
                engine,
                pre.image,
                roi,
                overlap=infer.overlap,
                mode=infer.mode,
                sw_batch_size=infer.sw_batch_size,
                device=device,
                exclusive=exclusive,
            )
            yield item, pre, region_masks(probs, infer.threshold, exclusive).numpy()
    finally:
        model.train(was_training)


def validate(
    model: torch.nn.Module,
    items: Sequence[dict],
    task: Task,
    roi: Sequence[int],
    infer: InferConfig,
    device: torch.device,
    amp: bool,
    overlays: int = 0,
    keep_masks: bool = False,
) -> tuple[list[dict], dict[str, np.ndarray], list[ScoredCase]]:
    """Per-case rows {id, dice_<region>...}, overlay pictures for the first `overlays` cases, and (`keep_masks`)
    each case's raw masks and truth, so the post-processing search after training need not predict again.

    Fixed post-processing rules in `infer` are applied, so the Dice is what `medseg predict` would give; rules
    still to be chosen (None) are chosen after training (`training.postprocess_choice`).
    """
    rows, pictures, kept = [], {}, []
    scheme, region_names = task.scheme, task.scheme.region_names
    for n, (item, pre, raw) in enumerate(predicted_masks(model, items, roi, infer, device, amp, scheme.exclusive)):
        gt = np.asarray(pre.regions)
        if keep_masks:
            kept.append(ScoredCase(raw, gt.astype(bool), pre.meta.model_spacing))
        pred = postprocess(raw, scheme, infer.postprocess, pre.meta.model_spacing) if infer.postprocess else raw
        row = {"id": item["id"]}
        for i, name in enumerate(region_names):
            row[f"dice_{name.lower()}"] = dice(pred[i], gt[i])
        row["dice_mean"] = float(np.mean([row[f"dice_{r.lower()}"] for r in region_names]))
        rows.append(row)
        if n < overlays:
            pictures[item["id"]] = overlay_figure(
                np.asarray(pre.image),
                task.channels,
                task.overlay_channels,
                region_names,
                pred,
                gt,
                title=f"{item['id']}  Dice " + " ".join(f"{r}={row[f'dice_{r.lower()}']:.2f}" for r in region_names),
            )
    return rows, pictures, kept


def mean_val_dice(model: torch.nn.Module, spec: TrainSpec) -> float | None:
    """Mean region Dice of `model` over the run's validation cases, measured as an epoch's validation is (ranks
    share the cases) and logged nowhere: what a pruned network is judged against (its source, unpruned)."""
    cfg, world = spec.cfg, spec.world
    items = spec.val_items[world.rank :: world.world_size]
    rows, _, _ = validate(model, items, spec.task, cfg.train.patch_size, cfg.infer, spec.device, cfg.train.amp)
    total = mean_across({"dice_mean": float(sum(r["dice_mean"] for r in rows)), "n": float(len(rows))}, world)
    return total["dice_mean"] / total["n"] if total["n"] else None


# Validation masks are kept for the post-processing search up to this many cases (~20 MB each at BraTS size).
KEEP_MASKS_UP_TO = 20


def validate_epoch(
    model: torch.nn.Module, spec: TrainSpec, tracker: Tracker, epoch: int
) -> tuple[dict[str, float], list[ScoredCase] | None]:
    """Whole-volume validation, each rank on its share of cases; returns `val_dice_*` averaged over all cases,
    and in a single process the cases' masks (for the post-processing search). Rank 0 logs the per-case CSV and
    overlay pictures."""
    cfg, world = spec.cfg, spec.world
    keep = not world.distributed and len(spec.val_items) <= KEEP_MASKS_UP_TO
    rows, pictures, kept = validate(
        model,
        spec.val_items[world.rank :: world.world_size],
        spec.task,
        cfg.train.patch_size,
        cfg.infer,
        spec.device,
        cfg.train.amp,
        overlays=cfg.train.overlays if world.is_main else 0,
        keep_masks=keep,
    )
    # The same keys on every rank (even one without cases), or the all-reduce would mismatch.
    keys = [f"dice_{r.lower()}" for r in spec.task.scheme.region_names] + ["dice_mean"]
    sums = {k: float(sum(r[k] for r in rows)) for k in keys} | {"n": float(len(rows))}
    total = mean_across(sums, world)
    if world.is_main:
        # files are named by the epoch as the log counts it (from 1); MLflow steps count from 0
        tracker.log_text(rows_to_csv(rows), f"validation/epoch_{epoch + 1:04d}.csv")
        for cid, rgb in pictures.items():
            tracker.log_image(rgb, key=f"overlay_{cid}", step=epoch)
            save_png(rgb, spec.out_dir / "overlays" / f"{cid}_epoch{epoch + 1:04d}.png")
    metrics = {f"val_{k}": total[k] / total["n"] for k in keys} if total["n"] else {}
    return metrics, kept if keep else None
