"""Whole-volume validation with sliding windows; per-case region Dice (BraTS convention)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from medseg.config import InferConfig
from medseg.core import LabelScheme
from medseg.data.cache import read_entry
from medseg.evaluation.metrics import dice
from medseg.inference.sliding import sliding_predict
from medseg.transforms.postprocess import postprocess
from medseg.transforms.preprocess import Preprocessed
from medseg.viz.overlays import overlay_figure


def predicted_masks(
    model: torch.nn.Module,
    items: Sequence[dict],
    roi: Sequence[int],
    infer: InferConfig,
    device: torch.device,
    amp: bool,
) -> Iterator[tuple[dict, Preprocessed, np.ndarray]]:
    """(item, cached case, raw thresholded region masks (R, x, y, z)) per validation item, model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        for item in items:
            pre = read_entry(Path(item["entry"]))
            probs = sliding_predict(
                model,
                pre.image,
                roi,
                overlap=infer.overlap,
                mode=infer.mode,
                sw_batch_size=infer.sw_batch_size,
                device=device,
                amp=amp,
            )
            yield item, pre, (probs > infer.threshold).numpy()
    finally:
        model.train(was_training)


def validate(
    model: torch.nn.Module,
    items: Sequence[dict],
    scheme: LabelScheme,
    channel_names: Sequence[str],
    roi: Sequence[int],
    infer: InferConfig,
    device: torch.device,
    amp: bool,
    overlays: int = 0,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Returns per-case rows {id, dice_<region>...} and overlay pictures for the first `overlays` cases.

    Fixed post-processing rules in `infer` are applied, so the Dice is what `medseg predict` would give; rules
    still to be chosen (None) are chosen after training (`training.postprocess_choice`).
    """
    rows, pictures = [], {}
    region_names = scheme.region_names
    for n, (item, pre, pred) in enumerate(predicted_masks(model, items, roi, infer, device, amp)):
        if infer.postprocess:
            pred = postprocess(pred, scheme, infer.postprocess, pre.meta.spacing)
        gt = np.asarray(pre.regions)
        row = {"id": item["id"]}
        for i, name in enumerate(region_names):
            row[f"dice_{name.lower()}"] = dice(pred[i], gt[i])
        row["dice_mean"] = float(np.mean([row[f"dice_{r.lower()}"] for r in region_names]))
        rows.append(row)
        if n < overlays:
            shown = [c for c in ("flair", "t1ce") if c in channel_names] or list(channel_names[:1])
            pictures[item["id"]] = overlay_figure(
                np.asarray(pre.image),
                channel_names,
                shown,
                region_names,
                pred,
                gt,
                title=f"{item['id']}  Dice " + " ".join(f"{r}={row[f'dice_{r.lower()}']:.2f}" for r in region_names),
            )
    return rows, pictures
