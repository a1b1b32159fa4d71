"""Gliomas for the anatomy-based generator: BraTS sub-regions, grade mix, multifocality, edema along white matter.

Each lesion has a core (an irregular ellipsoid), which in a high-grade lesion is an enhancing rim around necrosis
(or solid, patchy enhancement) and in a low-grade lesion non-enhancing tumour; edema spreads further where white
matter is and stops at CSF, so it grows fingers along tracts as real vasogenic edema does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from medseg.synth.fields import ellipsoid_distance, smooth_noise

# Internal class codes of every synthetic label map: 1 necrotic / non-enhancing core, 2 edema, 3 enhancing tumour.
NECROTIC, EDEMA, ENHANCING = 1, 2, 3

Grade = Literal["high", "solid", "low", "edema_only"]


@dataclass(frozen=True)
class Lesion:
    """One tumour focus: position (template voxel coordinates), core radius and edema reach (mm), grade."""

    center_template: np.ndarray
    radius_mm: float
    edema_mm: float
    grade: Grade


def draw_grade(rng: np.random.Generator) -> Grade:
    """BraTS-like mix: most cases high-grade with necrosis; some solid; ~20 % without enhancement; rare edema only."""
    return rng.choice(["high", "solid", "low", "edema_only"], p=[0.6, 0.15, 0.2, 0.05]).item()


def draw_lesions(rng: np.random.Generator, wm: np.ndarray, depth: np.ndarray) -> list[Lesion]:
    """One lesion, or two for a multifocal case (~15 %), centred in cerebral white matter away from the surface.

    `wm`, `depth`: the template's white-matter probability and depth (mm), on its 1 mm grid.
    """
    grade = draw_grade(rng)
    count = 2 if rng.uniform() < 0.15 else 1
    lesions = []
    for i in range(count):
        radius = rng.uniform(9, 24) if i == 0 else rng.uniform(5, 12)
        if grade == "low":
            radius *= 1.2
        reach = rng.uniform(4, 14) if grade in ("low", "edema_only") else rng.uniform(8, 28)
        z_floor = wm.shape[2] * 0.4  # above the cerebellum and brainstem in the MNI template
        ok = (wm > 0.6) & (depth > radius + 6)
        ok[:, :, : int(z_floor)] = False
        candidates = np.argwhere(ok)
        if not len(candidates):
            candidates = np.argwhere(wm > 0.5)
        center = candidates[rng.integers(len(candidates))].astype(np.float64)
        lesions.append(Lesion(center, float(radius), float(reach), grade))
    return lesions


def lesion_labels(
    rng: np.random.Generator,
    lesion: Lesion,
    center_vox: np.ndarray,
    spacing: float,
    wm: np.ndarray,
    csf: np.ndarray,
    brain: np.ndarray,
) -> np.ndarray:
    """Label map (X, Y, Z) int8 of one lesion on the output grid, internal codes.

    `center_vox`: the lesion centre in output voxels; `wm`, `csf`, `brain`: tissue on the output grid.
    """
    shape = brain.shape
    radii = lesion.radius_mm / spacing * rng.uniform(0.75, 1.3, 3)
    core_d = ellipsoid_distance(shape, center_vox, radii)
    core_d += 0.3 * smooth_noise(rng, shape, 12 / spacing) + 0.15 * smooth_noise(rng, shape, 5 / spacing)
    core = (core_d < 1.0) & brain & (lesion.grade != "edema_only")
    label = np.zeros(shape, np.int8)
    if lesion.grade == "high":
        necrosis = core_d < rng.uniform(0.45, 0.75) + 0.25 * smooth_noise(rng, shape, 6 / spacing)
        label[core] = ENHANCING
        label[core & necrosis] = NECROTIC
    elif lesion.grade == "solid":
        label[core] = NECROTIC
        label[core & (smooth_noise(rng, shape, 7 / spacing) > -0.2)] = ENHANCING
    elif lesion.grade == "low":
        label[core] = NECROTIC  # BraTS label 1 holds non-enhancing tumour too
    # Edema reaches further through white matter, not into CSF, with a ragged border.
    if core.any():
        dist_mm = ndimage.distance_transform_edt(~core, sampling=spacing)
    else:
        dist_mm = ellipsoid_distance(shape, center_vox, (1.0, 1.0, 1.0)) * spacing
    tract = ndimage.gaussian_filter(wm, 1.5 / spacing)
    reach = lesion.edema_mm * (0.25 + tract) * (1.0 + 0.35 * smooth_noise(rng, shape, 12 / spacing))
    if lesion.grade == "edema_only":
        reach = reach + lesion.radius_mm * 0.6
    edema = brain & ~core & (dist_mm < reach) & (csf < 0.6)
    label[edema] = EDEMA
    return label


def merge_labels(maps: list[np.ndarray]) -> np.ndarray:
    """Overlay lesions: tumour core classes win over edema where foci meet."""
    out = np.zeros(maps[0].shape, np.int8)
    for code in (EDEMA, NECROTIC, ENHANCING):
        for m in maps:
            out[m == code] = code
    return out
