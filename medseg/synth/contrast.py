"""MRI contrasts from tissue and tumour maps: T1, T1ce, T2 and FLAIR as a radiologist would expect them.

Intensities are mixtures of tissue probabilities (partial volume at every border), with structures that mimic
tumour the way real anatomy does: CSF is bright on T2 like necrosis; vessels and the choroid plexus enhance on
T1ce like the tumour rim; periventricular caps and small white-matter lesions are bright on FLAIR like edema;
some cases keep a bright rim of fat or dura at the brain edge. Then a bias field, blur, Rician noise and an
arbitrary scanner scale per modality. No scanner physics beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.synth.fields import smooth_noise
from medseg.synth.tumour import EDEMA, ENHANCING, NECROTIC

CHANNELS = ("t1", "t1ce", "t2", "flair")

# Relative intensity (white matter ~1) of each tissue per modality.
#          CSF   GM    WM   necrosis edema  enhancing vessel choroid  cap   wmh   rim
_TABLE = {
    "t1": (0.32, 0.72, 1.00, 0.42, 0.74, 0.80, 0.80, 0.70, 0.90, 0.85, 1.50),
    "t1ce": (0.32, 0.74, 1.00, 0.42, 0.78, 1.75, 1.60, 1.50, 0.92, 0.86, 1.60),
    "t2": (2.20, 1.35, 0.85, 1.95, 1.70, 1.35, 0.45, 1.20, 1.30, 1.60, 0.90),
    "flair": (0.30, 1.12, 0.92, 0.95, 1.65, 1.35, 0.85, 0.90, 1.35, 1.55, 1.10),
}
_COLUMNS = ("csf", "gm", "wm", "necrotic", "edema", "enhancing", "vessel", "choroid", "cap", "wmh", "rim")


@dataclass
class Tissue:
    """Output-grid maps the contrasts are made from (all (X, Y, Z) float32 in [0, 1], `brain` bool)."""

    t1_template: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    depth_mm: np.ndarray
    brain: np.ndarray


def mimic_masks(rng: np.random.Generator, tissue: Tissue, spacing: float) -> dict[str, np.ndarray]:
    """Non-tumour structures that look like tumour on one modality or another (bool maps)."""
    shape = tissue.brain.shape
    f1, f2 = smooth_noise(rng, shape, 14 / spacing), smooth_noise(rng, shape, 14 / spacing)
    width = 0.035  # ~1-2 mm tubes at any spacing (thinner than a voxel on coarse grids)
    sulcal = (tissue.csf > 0.25) | ((tissue.gm > 0.3) & (tissue.depth_mm < 20))
    vessel = (np.abs(f1) < width) & (np.abs(f2) < width) & sulcal & tissue.brain
    ventricle = (tissue.csf > 0.7) & (tissue.depth_mm > 25)
    choroid = ventricle & (smooth_noise(rng, shape, 6 / spacing) > 0.45)
    caps = np.zeros(shape, bool)
    if rng.uniform() < 0.6:
        near = ndimage.binary_dilation(ventricle, iterations=max(1, round(3 / spacing))) & ~ventricle
        caps = near & (tissue.wm > 0.4) & (smooth_noise(rng, shape, 10 / spacing) > -0.1)
    wmh = np.zeros(shape, bool)
    deep_wm = np.argwhere((tissue.wm > 0.8) & (tissue.depth_mm > 15))
    for _ in range(rng.integers(0, 7) if len(deep_wm) else 0):
        c = deep_wm[rng.integers(len(deep_wm))]
        r = rng.uniform(1.5, 4.0) / spacing
        sl = tuple(slice(max(0, int(ci - r - 1)), int(ci + r + 2)) for ci in c)
        grid = np.ogrid[sl]
        blob = sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True)) <= r * r
        wmh[sl] |= blob
    rim = np.zeros(shape, bool)
    if rng.uniform() < 0.4:
        rim = tissue.brain & (tissue.depth_mm < 2.5) & (smooth_noise(rng, shape, 25 / spacing) > 0.2)
    return {"vessel": vessel, "choroid": choroid, "cap": caps & tissue.brain, "wmh": wmh & tissue.brain, "rim": rim}


def _soft(mask: np.ndarray, sigma_vox: float) -> np.ndarray:
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma_vox)


def render(
    rng: np.random.Generator, tissue: Tissue, label: np.ndarray, mimics: dict[str, np.ndarray], spacing: float
) -> dict[str, np.ndarray]:
    """Channel name -> float32 volume (background exactly 0, brain strictly positive) for one case."""
    shape = tissue.brain.shape
    pv = 0.6 / spacing  # partial-volume width of hard-edged structures, in voxels
    soft = {name: _soft(label == code, pv) for name, code in (("necrotic", NECROTIC), ("enhancing", ENHANCING))}
    # Edema is water in tissue: the anatomy shows through, unevenly.
    soft["edema"] = _soft(label == EDEMA, pv) * (0.72 + 0.18 * smooth_noise(rng, shape, 8 / spacing))
    soft.update({name: _soft(m, pv) for name, m in mimics.items()})
    tumour = np.clip(soft["necrotic"] + soft["enhancing"], 0.0, 1.0)
    texture = 1.0 + 0.12 * smooth_noise(rng, shape, 4 / spacing)  # heterogeneous tumour tissue
    images = {}
    for ch in CHANNELS:
        c = dict(zip(_COLUMNS, np.asarray(_TABLE[ch]) * rng.uniform(0.93, 1.07, len(_COLUMNS)), strict=True))
        base = tissue.csf * c["csf"] + tissue.gm * c["gm"] + tissue.wm * c["wm"]
        if ch in ("t1", "t1ce"):  # the real template T1 carries deep nuclei and cortex detail
            base = 0.5 * base + 0.5 * tissue.t1_template
        vol = base
        for name in ("cap", "wmh", "vessel", "choroid", "rim", "edema"):
            vol = vol * (1 - soft[name]) + c[name] * soft[name]
        vol = vol * (1 - tumour) + (soft["necrotic"] * c["necrotic"] + soft["enhancing"] * c["enhancing"]) * texture
        vol = vol * np.exp(rng.uniform(0.08, 0.25) * smooth_noise(rng, shape, 80 / spacing))  # bias field
        vol = ndimage.gaussian_filter(vol, 0.5)
        sigma = rng.uniform(0.015, 0.04)
        noisy = np.hypot(vol + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape)).astype(np.float32)
        scale = rng.uniform(300, 2500)
        images[ch] = (np.maximum(noisy, 0.02) * scale * tissue.brain).astype(np.float32)
    return images
