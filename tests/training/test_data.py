"""Training patches: where positive and negative patches are centred."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.cache import _write_entry
from medseg.training.data import train_transforms
from medseg.transforms.geometry import GridMeta
from medseg.transforms.preprocess import Preprocessed

SHAPE = (40, 40, 40)


def _entry(tmp_path, regions: np.ndarray, image: np.ndarray) -> dict:
    meta = GridMeta(SHAPE, ((0, 1), (1, 1), (2, 1)), SHAPE, (0, 0, 0), SHAPE, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    entry = tmp_path / "case"
    _write_entry(entry, Preprocessed(image, regions, meta, np.zeros((image.shape[0], 2))))
    return {"id": "case", "entry": str(entry)}


def _patches(item: dict, pos_neg_ratio: float, n: int = 40) -> list[np.ndarray]:
    out = []
    for seed in range(n):
        t = train_transforms((8, 8, 8), 1, pos_neg_ratio)
        t.set_random_state(seed)
        (patch,) = t(item)
        out.append(np.asarray(patch["image"]))
    return out


def _centres(item: dict, pos_neg_ratio: float) -> list[np.ndarray]:
    """Patch centres, read from an image that encodes each voxel's coordinates (+-1 for a flip, +-10 % for the
    intensity augmentation)."""
    return [np.array([float(p[c, 4, 4, 4]) for c in range(3)]) for p in _patches(item, pos_neg_ratio)]


def _coordinate_image(nonzero: np.ndarray) -> np.ndarray:
    grid = np.indices(SHAPE).astype(np.float32) + 1.0  # +1: never 0, so the whole box counts as image
    return grid * nonzero[None]


def test_every_region_can_centre_a_positive_patch_even_the_first(tmp_path):
    """Two non-nested regions (a generic task): MONAI would read channel 0 as one-hot background and never centre
    a patch on it; the foreground used for sampling is the union of all regions."""
    regions = np.zeros((2, *SHAPE), np.uint8)
    regions[0, 5:9, 5:9, 5:9] = 1
    regions[1, 30:34, 30:34, 30:34] = 1
    item = _entry(tmp_path, regions, _coordinate_image(np.ones(SHAPE, bool)))
    centres = _centres(item, pos_neg_ratio=1e6)  # positives only
    assert any((c < 11).all() for c in centres), "no patch centred on the first region"
    assert any((c > 27).all() for c in centres)


def test_negative_patches_are_centred_inside_the_image_not_in_the_air(tmp_path):
    inside = np.zeros(SHAPE, bool)
    inside[12:28, 12:28, 12:28] = True  # the "brain"; the rest is background exactly 0
    regions = np.zeros((1, *SHAPE), np.uint8)
    regions[0, 18:20, 18:20, 18:20] = 1
    item = _entry(tmp_path, regions, _coordinate_image(inside))
    for patch in _patches(item, pos_neg_ratio=0.0):  # negatives only
        assert (np.abs(patch) > 1).any(), "a negative patch of air only"


@pytest.fixture(autouse=True)
def _quiet_monai(monkeypatch):
    monkeypatch.setenv("MONAI_DATA_DIRECTORY", "")


def test_volumes_smaller_than_the_patch_are_padded_before_sampling(tmp_path):
    regions = np.zeros((1, *SHAPE), np.uint8)
    regions[0, 18:20, 18:20, 18:20] = 1
    item = _entry(tmp_path, regions, _coordinate_image(np.ones(SHAPE, bool)))
    (patch,) = train_transforms((48, 48, 48), 1, 1.0)(item)
    assert patch["image"].shape[1:] == (48, 48, 48) and "fg" not in patch
