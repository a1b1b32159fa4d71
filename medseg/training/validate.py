"""Whole-volume validation with sliding windows; per-case region Dice (BraTS convention)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medseg.config import InferConfig
from medseg.data.cache import read_entry
from medseg.evaluation.metrics import dice
from medseg.inference.sliding import sliding_predict
from medseg.viz.overlays import overlay_figure


def validate(
    model: torch.nn.Module,
    items: Sequence[dict],
    region_names: Sequence[str],
    channel_names: Sequence[str],
    roi: Sequence[int],
    infer: InferConfig,
    device: torch.device,
    amp: bool,
    overlays: int = 0,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Returns per-case rows {id, dice_<region>...} and overlay pictures for the first `overlays` cases."""
    rows, pictures = [], {}
    model.eval()
    for n, item in enumerate(items):
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
        pred = (probs > infer.threshold).numpy()
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
    model.train()
    return rows, pictures
