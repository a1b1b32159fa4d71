from __future__ import annotations

import numpy as np
import pytest

from medseg.pipelines.brats import LABELS_2021, LABELS_2023, LABELS_MSD, SCHEME
from medseg.transforms.labels import labels_to_regions, regions_to_labels


@pytest.mark.parametrize("label_map", [LABELS_2021, LABELS_2023, LABELS_MSD], ids=["2021", "2023", "msd"])
def test_label_region_round_trip(label_map):
    rng = np.random.default_rng(0)
    values = [0, *label_map.values()]
    label = rng.choice(values, size=(8, 9, 10)).astype(np.int16)
    regions = labels_to_regions(label, SCHEME, label_map)
    assert regions.shape == (3, 8, 9, 10)
    assert np.array_equal(regions_to_labels(regions, SCHEME, label_map), label)


def test_regions_follow_brats_definitions_for_2023_et3():
    label = np.array([0, 1, 2, 3])[:, None, None]
    et, tc, wt = labels_to_regions(label, SCHEME, LABELS_2023)[:, :, 0, 0]
    assert et.tolist() == [0, 0, 0, 1]  # ET = 3 in 2023 (MONAI's default assumes 4)
    assert tc.tolist() == [0, 1, 0, 1]
    assert wt.tolist() == [0, 1, 1, 1]
