"""Synthetic abdominal CT (portal-venous phase) with liver, kidneys and spleen labelled, on varying grids.

Built from shapes, not anatomy: an elliptic body with subcutaneous fat, muscle and visceral fat, a vertebral body
with cortex, and deformed ellipsoid organs at plausible places with realistic Hounsfield units (liver ~100,
spleen ~115, kidney cortex ~170 with darker medulla, muscle ~50, fat ~-100, bone 300-900, air -1000), noise and
a little blur. Every case has its own in-plane resolution (matrix and pixel size) and slice thickness, so
resampling to a planned spacing matters. It is synthetic: no scanner physics beyond noise and blur, no other
organs, no pathology.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.synth.fields import smooth_noise

CT_LABELS = {"liver": 1, "kidney": 2, "spleen": 3}
AIR, FAT, MUSCLE, BONE = -1000.0, -100.0, 50.0, 700.0


@dataclass
class CTCase:
    """image (X, Y, Z) int16 HU on a RAS grid, label (X, Y, Z) uint8 (`CT_LABELS`), voxel size in mm."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def ct_grid(rng: np.random.Generator, matrix: int) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """A scan's grid: `matrix`^2 pixels over a 330-420 mm field of view, 2.5-5 mm slices over ~220 mm."""
    pixel = float(rng.uniform(330, 420)) / matrix
    slice_mm = float(rng.choice([2.5, 3.0, 4.0, 5.0]))
    slices = round(rng.uniform(200, 240) / slice_mm)
    return (matrix, matrix, slices), (round(pixel, 4), round(pixel, 4), slice_mm)


def _mm_grid(shape, spacing) -> list[np.ndarray]:
    """Open grids of voxel centres in mm, centred on the volume (R, A, S)."""
    return [
        ((np.arange(n, dtype=np.float32) - (n - 1) / 2) * s).reshape([-1 if i == a else 1 for i in range(3)])
        for a, (n, s) in enumerate(zip(shape, spacing, strict=True))
    ]


def _organ(rng, grid, centre, radii, shape, spacing, wobble: float = 0.25) -> np.ndarray:
    """A deformed ellipsoid (centre and semi-axes in mm): its distance map perturbed by a smooth random field."""
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    scale = max(4.0, 25.0 / min(spacing))
    return np.sqrt(d) + wobble * smooth_noise(rng, shape, scale) <= 1.0


def ct_case(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 0) -> CTCase:
    """One abdominal CT case on the given grid (RAS: +x towards the patient's right, +y anterior, +z superior)."""
    rng = np.random.default_rng(seed)
    x, y, z = _mm_grid(shape, spacing)
    a, b = rng.uniform(140, 170), rng.uniform(95, 120)  # body semi-axes (left-right, anterior-posterior)
    taper = 1 + 0.08 * (z / 120.0)  # wider towards the chest
    body_r = np.sqrt((x / (a * taper)) ** 2 + (y / (b * taper)) ** 2)
    body = body_r <= 1.0
    fat_depth = rng.uniform(0.08, 0.18)
    hu = np.full(shape, AIR, np.float32)
    hu[body] = FAT
    inner = body_r <= 1.0 - fat_depth
    hu[inner] = MUSCLE
    visceral = inner & (smooth_noise(rng, shape, max(3.0, 30.0 / spacing[0])) > rng.uniform(0.0, 0.3))
    hu[visceral] = FAT + rng.uniform(-10, 10)
    # Vertebral body and spinal canal, posterior midline.
    spine_y = -b * taper + 45
    vert_r = np.broadcast_to((x / 20) ** 2 + ((y - spine_y) / 18) ** 2, shape)
    hu[vert_r <= 1] = rng.uniform(250, 350)  # cancellous
    hu[(vert_r <= 1) & (vert_r > 0.7)] = BONE + rng.uniform(-200, 200)  # cortex
    jitter = lambda s: rng.normal(0, s)  # noqa: E731
    label = np.zeros(shape, np.uint8)
    organs = {
        # name: (centre mm, semi-axes mm, HU mean)
        "liver": ((75 + jitter(8), 10 + jitter(8), 60 + jitter(15)), (70, 65, 75), rng.uniform(90, 115)),
        "spleen": ((-85 + jitter(8), -40 + jitter(8), 55 + jitter(15)), (30, 40, 50), rng.uniform(110, 130)),
    }
    for name, (centre, radii, mean) in organs.items():
        radii = tuple(r * rng.uniform(0.85, 1.15) for r in radii)
        mask = _organ(rng, (x, y, z), centre, radii, shape, spacing) & inner
        hu[mask] = mean + 8 * smooth_noise(rng, shape, 6.0)[mask]
        label[mask] = CT_LABELS[name]
    kz = rng.uniform(-25, 5)
    for side in (-1, 1):  # kidneys: cortex bright, medulla darker, either side of the spine
        centre = (side * (55 + jitter(5)), spine_y + 25 + jitter(5), kz + side * 10 + jitter(5))
        radii = tuple(r * rng.uniform(0.85, 1.15) for r in (25, 30, 55))
        mask = _organ(rng, (x, y, z), centre, radii, shape, spacing, wobble=0.15) & inner & (label == 0)
        core = _organ(rng, (x, y, z), centre, tuple(0.55 * r for r in radii), shape, spacing, wobble=0.1)
        hu[mask] = rng.uniform(150, 190)
        hu[mask & core] = rng.uniform(90, 120)
        label[mask] = CT_LABELS["kidney"]
    hu = ndimage.gaussian_filter(hu, sigma=(0.6, 0.6, 0.3))
    hu += rng.normal(0, rng.uniform(10, 25), shape).astype(np.float32)
    hu[~body] = AIR + rng.normal(0, 5, int((~body).sum()))
    return CTCase(np.clip(np.round(hu), -1024, 3071).astype(np.int16), label, spacing)
