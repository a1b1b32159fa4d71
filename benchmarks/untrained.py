"""An untrained BraTS model bundle for timing benchmarks: speed does not depend on the weights."""

from __future__ import annotations

import torch

from medseg.io.bundle import ModelBundle
from medseg.nets import create_model
from pipelines.brats import CHANNELS, LABELS_2021, SCHEME


def untrained_bundle(name: str, patch: int = 128) -> ModelBundle:
    """Seeded random weights of a registered network, roi `patch`^3 (TransUNet position embeddings laid out
    for it), training statistics of a typical MRI, gaussian blending."""
    torch.manual_seed(0)
    kwargs = {"img_size": patch} if name.startswith("transunet3d") else {}
    model = create_model(name, **kwargs)
    return ModelBundle(
        name, kwargs, model.state_dict(), "brats", list(CHANNELS), SCHEME, LABELS_2021, [patch] * 3,
        [[500.0, 200.0]] * 4, True, {"mode": "gaussian"},
    )  # fmt: skip
