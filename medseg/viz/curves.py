"""Learning curves: training loss and validation Dice per region over epochs."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from medseg.viz.overlays import REGION_COLOURS, figure_to_rgb


def learning_curves(history: Sequence[dict], title: str = "") -> np.ndarray:
    """RGB picture from per-epoch dicts holding `epoch` (from 0), `train_loss` and optionally `val_dice_*`; epochs
    are drawn from 1, as the training log and `runs compare --plot` count them."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80)
    epochs = [h["epoch"] + 1 for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], color="#333", marker=".")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    keys = sorted({k for h in history for k in h if k.startswith("val_dice_")})
    for key in keys:
        pts = [(h["epoch"] + 1, h[key]) for h in history if key in h]
        region = key.removeprefix("val_dice_").upper()
        ax_dice.plot(
            *zip(*pts, strict=True),
            marker="o",
            label=region,
            color=REGION_COLOURS.get(region),
            lw=2.5 if region == "MEAN" else 1.5,
        )
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    if keys:
        ax_dice.legend(fontsize=8)
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_to_rgb(fig)


def compare_curves(curves: dict[str, list[tuple[int, float]]], metric: str = "val Dice (mean)") -> np.ndarray:
    """RGB picture overlaying one metric's curve per run."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=80)
    for name, points in curves.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set(xlabel="epoch", ylabel=metric, ylim=(0, 1), title=f"{metric} by run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_to_rgb(fig)
