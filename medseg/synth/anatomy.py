"""Anatomy-based BraTS-like cases: real brain anatomy (MNI ICBM152), deformed and posed per case, with gliomas.

One case: place the template (random pose, smooth deformation, mass effect around each lesion), sample its tissue
maps onto the output grid, draw the lesions there, then render the four MRI contrasts. The grid is 1 mm at
240x240x155; smaller grids hold the same head at a coarser spacing (e.g. 96x96x64 -> 2.5 mm), so physical sizes
and millimetre metrics stay realistic at any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.synth.atlas import Atlas
from medseg.synth.contrast import Tissue, mimic_masks, render
from medseg.synth.tumour import draw_lesions, lesion_labels, merge_labels
from medseg.synth.warp import MassEffect, random_placement, sample, template_coordinates, template_to_output_mm

BRATS_SHAPE = (240, 240, 155)


def grid_spacing(shape: Sequence[int]) -> float:
    """Isotropic spacing (mm) at which `shape` covers at least the BraTS field of view (240x240x155 mm)."""
    return float(max(ref / s for ref, s in zip(BRATS_SHAPE, shape, strict=True)))


@dataclass
class AnatomyCase:
    """One case on a RAS grid: channel name -> float32 volume (background exactly 0), an int8 label map with
    internal codes (1 necrotic/non-enhancing, 2 edema, 3 enhancing), the grid spacing in mm, and the tissue and
    tumour-mimic maps it was rendered from (to study where a model errs)."""

    images: dict[str, np.ndarray]
    label: np.ndarray
    spacing: float
    tissue: Tissue
    mimics: dict[str, np.ndarray]


def anatomy_case(atlas: Atlas, shape: tuple[int, int, int] = BRATS_SHAPE, seed: int = 0) -> AnatomyCase:
    """Generate the case of `seed` on a grid of `shape` (the same head and tumour at any grid size)."""
    rng = np.random.default_rng(seed)
    spacing = grid_spacing(shape)
    placement = random_placement(rng)
    lesions = draw_lesions(rng, atlas.wm, atlas.depth)
    centers_mm = [template_to_output_mm(lesion.center_template, atlas, shape, spacing, placement) for lesion in lesions]
    pushes = [
        MassEffect(c, sigma_mm=1.6 * lesion.radius_mm, strength=rng.uniform(0.25, 0.55) * (lesion.grade != "low"))
        for c, lesion in zip(centers_mm, lesions, strict=True)
    ]
    coords = template_coordinates(shape, spacing, atlas, placement, rng, pushes)
    brain = sample(atlas.brain.astype(np.float32), coords) > 0.5
    tissue = Tissue(
        t1_template=sample(atlas.t1, coords) * brain,
        gm=sample(atlas.gm, coords) * brain,
        wm=sample(atlas.wm, coords) * brain,
        csf=sample(atlas.csf, coords) * brain,
        depth_mm=sample(atlas.depth, coords),
        brain=brain,
    )
    del coords
    origin = (np.asarray(shape) - 1) / 2.0
    maps = [
        lesion_labels(rng, lesion, c / spacing + origin, spacing, tissue.wm, tissue.csf, brain)
        for lesion, c in zip(lesions, centers_mm, strict=True)
    ]
    label = merge_labels(maps)
    mimics = mimic_masks(rng, tissue, spacing)
    return AnatomyCase(render(rng, tissue, label, mimics, spacing), label, spacing, tissue, mimics)
