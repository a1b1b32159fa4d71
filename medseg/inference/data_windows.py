"""Windows of real cases, preprocessed as the network sees them: what int8 calibration and the accuracy check of
`--engine auto` run on. Random noise never reaches the logits near 0 where a tumour's border lies, so an engine
that moves those probabilities passes on noise and flips mask voxels on data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.core import Case
from medseg.errors import DataError
from medseg.io.bundle import ModelBundle
from medseg.io.nifti import read_case
from medseg.transforms.preprocess import preprocess_case


def data_windows(bundle: ModelBundle, cases: Sequence[Case], count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` windows of the patch size from up to `count` of `cases` (each read once; a bad case is skipped),
    alternately centred on the brightest voxel (tumour, in MRI) and anywhere in the foreground."""
    images, first_error = [], None
    for case in cases:
        if len(images) == count:
            break
        try:
            images.append(preprocess_case(read_case(case, with_label=False), case, None, bundle.preprocess).image)
        except DataError as exc:
            first_error = first_error or exc
    if not images:
        raise first_error or DataError("no case to take windows from")
    rng = np.random.default_rng(seed)
    roi = np.array(bundle.patch_size)
    windows = []
    for i in range(count):
        image = images[i % len(images)]
        shape = np.array(image.shape[1:])
        foreground = np.argwhere(np.any(image != 0, axis=0))
        centre = foreground[rng.integers(len(foreground))] if i % 2 else np.unravel_index(image.max(0).argmax(), shape)
        start = np.clip(np.asarray(centre) - roi // 2, 0, np.maximum(shape - roi, 0))
        box = tuple(slice(s, s + r) for s, r in zip(start, roi, strict=True))
        w = image[(slice(None), *box)]
        pad = [(0, 0), *((0, int(r - n)) for r, n in zip(roi, w.shape[1:], strict=True))]
        windows.append(np.pad(w, pad))
    return windows
