"""Overlay pictures: three orthogonal slices through the tumour centre, region contours over two channels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from medseg.io.atomic import atomic_path

REGION_COLOURS = {"ET": "#ff3b30", "TC": "#ffcc00", "WT": "#34c759"}
_FALLBACK = ["#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a"]


def _centre(masks: np.ndarray) -> tuple[int, ...]:
    """Centre of the largest connected lesion (scattered false positives must not pull the slices away)."""
    union = masks.any(axis=0)
    if not union.any():
        return tuple(s // 2 for s in masks.shape[1:])
    components, n = ndimage.label(union)
    largest = 1 + int(np.argmax(ndimage.sum_labels(union, components, index=np.arange(1, n + 1))))
    return tuple(round(c) for c in np.argwhere(components == largest).mean(axis=0))


def _slice(vol: np.ndarray, axis: int, idx: int) -> np.ndarray:
    return np.rot90(np.take(vol, idx, axis=axis))  # RAS volumes: rot90 puts anterior/superior up


def overlay_figure(
    image: np.ndarray,
    channel_names: Sequence[str],
    show_channels: Sequence[str],
    region_names: Sequence[str],
    pred: np.ndarray | None,
    gt: np.ndarray | None,
    title: str = "",
) -> np.ndarray:
    """RGB uint8 picture: rows = `show_channels`, columns = axial/coronal/sagittal through the lesion centre.

    Contours: prediction solid, ground truth dashed, one colour per region. Arrays are (C|R, x, y, z) RAS.
    """
    masks = gt if gt is not None and gt.any() else pred
    centre = _centre(masks) if masks is not None else tuple(s // 2 for s in image.shape[1:])
    rows = [channel_names.index(c) for c in show_channels if c in channel_names] or [0]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False, dpi=80)
    for r, ch in enumerate(rows):
        for col, (axis, label) in enumerate(((2, "axial"), (1, "coronal"), (0, "sagittal"))):
            ax = axes[r][col]
            ax.imshow(_slice(image[ch], axis, centre[axis]), cmap="gray")
            for i, name in enumerate(region_names):
                colour = REGION_COLOURS.get(name, _FALLBACK[i % len(_FALLBACK)])
                for masks_, style in ((pred, "solid"), (gt, "dashed")):
                    if masks_ is not None:
                        sl = _slice(masks_[i].astype(float), axis, centre[axis])
                        if sl.any():
                            ax.contour(sl, levels=[0.5], colors=[colour], linestyles=style, linewidths=1)
            ax.set_title(f"{channel_names[ch]} {label}", fontsize=9)
            ax.axis("off")
    handles = legend_handles(region_names, truth=gt is not None)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return figure_to_rgb(fig)


def legend_handles(region_names: Sequence[str], truth: bool) -> list:
    """A line per region colour, then the line styles: "truth" only where ground truth is drawn (predict draws
    none, and its legend showed it anyway)."""
    handles = [
        plt.Line2D([], [], color=REGION_COLOURS.get(n, _FALLBACK[i]), label=n) for i, n in enumerate(region_names)
    ]
    handles.append(plt.Line2D([], [], color="k", label="prediction"))
    if truth:
        handles.append(plt.Line2D([], [], color="k", ls="--", label="truth"))
    return handles


def figure_to_rgb(fig) -> np.ndarray:
    """Render a matplotlib figure to an (H, W, 3) uint8 array and close it."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def save_png(rgb: np.ndarray, path: str | Path) -> None:
    """Write an RGB array as PNG, atomically."""
    with atomic_path(path) as tmp:
        plt.imsave(tmp, rgb, format="png")
