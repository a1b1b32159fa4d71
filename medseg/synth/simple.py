"""The simple generator: an ellipsoid brain with a three-part tumour, for tests that need tiny, easy cases.

Hard enough that a model must combine modalities: necrosis and CSF are both dark on T1 but differ on
FLAIR; the enhancing rim only shows on T1ce; edema is bright on FLAIR and T2 but so is CSF on T2.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.synth.fields import ellipsoid_distance, smooth_noise
from medseg.synth.tumour import EDEMA, ENHANCING, NECROTIC

CHANNELS = ("t1", "t1ce", "t2", "flair")

#              background  CSF   GM    WM   necrotic edema enhancing
_CONTRAST = {
    "t1": (0.0, 0.25, 0.60, 0.80, 0.30, 0.50, 0.55),
    "t1ce": (0.0, 0.25, 0.60, 0.80, 0.25, 0.50, 1.30),
    "t2": (0.0, 1.00, 0.60, 0.40, 0.95, 0.85, 0.65),
    "flair": (0.0, 0.15, 0.55, 0.45, 0.60, 1.00, 0.80),
}


def simple_case(
    shape: tuple[int, int, int] = (240, 240, 155), seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One synthetic case: channel name -> float32 volume (background exactly 0), and an int label map
    with internal codes (1 necrotic, 2 edema, 3 enhancing)."""
    rng = np.random.default_rng(seed)
    s = np.array(shape, dtype=float)
    brain_d = ellipsoid_distance(shape, s / 2, s * np.array([0.40, 0.44, 0.42]))
    brain_d = brain_d + 0.06 * smooth_noise(rng, shape, 16)
    brain = brain_d < 1.0
    tissue = np.zeros(shape, np.int8)  # 0 bg, 1 CSF, 2 GM, 3 WM
    tissue[brain] = 2
    tissue[brain & (brain_d < 0.75 + 0.1 * smooth_noise(rng, shape, 8))] = 3
    ventricles = ellipsoid_distance(shape, s / 2, s * np.array([0.08, 0.16, 0.10])) < 1.0
    tissue[brain & ((brain_d > 0.93) | ventricles)] = 1

    # Tumour: an irregular blob off-centre in one hemisphere, with necrotic core, enhancing rim, edema.
    side = rng.choice([-1, 1])
    center = s / 2 + np.array([side * s[0] * rng.uniform(0.12, 0.2), rng.uniform(-0.12, 0.12) * s[1], 0])
    center[2] += rng.uniform(-0.1, 0.1) * s[2]
    radius = s.min() * rng.uniform(0.13, 0.2)
    tum_d = ellipsoid_distance(shape, center, radius * rng.uniform(0.8, 1.25, 3))
    tum_d = tum_d + 0.15 * smooth_noise(rng, shape, 6)
    label = np.zeros(shape, np.int16)
    label[brain & (tum_d < 1.7 + 0.3 * smooth_noise(rng, shape, 5))] = EDEMA
    label[brain & (tum_d < 1.0)] = ENHANCING
    if rng.uniform() < 0.85:
        label[brain & (tum_d < rng.uniform(0.5, 0.7))] = NECROTIC

    klass = np.where(label == 0, tissue, label.astype(np.int8) + 3)  # 4 necrotic, 5 edema, 6 enhancing
    bias = 1.0 + 0.15 * smooth_noise(rng, shape, 24)
    images = {}
    for ch in CHANNELS:
        lut = np.asarray(_CONTRAST[ch], np.float32)
        vol = lut[klass] * bias * rng.uniform(0.8, 1.2)
        vol = vol + rng.normal(0, 0.05, shape).astype(np.float32)
        vol = ndimage.gaussian_filter(vol, 0.6)
        images[ch] = (np.clip(vol, 0.01, None) * brain * 1000).astype(np.float32)
    return images, label
