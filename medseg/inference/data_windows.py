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


def data_windows(
    bundle: ModelBundle, cases: Sequence[Case], count: int, seed: int = 0, allow_missing: bool = False
) -> list[np.ndarray]:
    """`count` windows of the patch size, alternately centred on the brightest voxel (tumour, in MRI) and anywhere
    in the foreground, cut from up to `count` of `cases` as each is read (one volume in memory at a time). A bad
    case is skipped and the good cases' windows repeat in its place; DataError when no case can be read."""
    rng = np.random.default_rng(seed)
    per_case = -(-count // max(1, min(count, len(cases))))  # ceil: `count` windows over the cases used
    windows: list[np.ndarray] = []
    first_error = None
    for case in cases:
        if len(windows) >= count:
            break
        try:
            vols = read_case(case, with_label=False, allow_missing=allow_missing)
            image = preprocess_case(vols, case, None, bundle.preprocess).image
        except DataError as exc:
            first_error = first_error or exc
            continue
        first = len(windows)
        windows += [_window(image, bundle.patch_size, rng, (first + k) % 2 == 0) for k in range(per_case)]
        windows = windows[:count]
    if not windows:
        raise first_error or DataError("no case to take windows from")
    return [windows[i % len(windows)] for i in range(count)]


def _window(image: np.ndarray, patch: Sequence[int], rng: np.random.Generator, brightest: bool) -> np.ndarray:
    """One window of `image` (C, X, Y, Z), zero-padded to `patch` where the image is smaller."""
    shape, roi = np.array(image.shape[1:]), np.array(patch)
    foreground = np.argwhere(np.any(image != 0, axis=0))
    if brightest:
        centre = np.array(np.unravel_index(image.max(0).argmax(), shape))
    elif len(foreground):
        centre = foreground[rng.integers(len(foreground))]
    else:  # z-scored to all 0 (one intensity in the whole foreground): the middle
        centre = shape // 2
    start = np.clip(centre - roi // 2, 0, np.maximum(shape - roi, 0))
    box = tuple(slice(s, s + r) for s, r in zip(start, roi, strict=True))
    w = image[(slice(None), *box)]
    return np.pad(w, [(0, 0), *((0, int(r - n)) for r, n in zip(roi, w.shape[1:], strict=True))])
