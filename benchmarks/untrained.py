"""An untrained BraTS model bundle for timing benchmarks: speed does not depend on the weights."""

from __future__ import annotations

import torch

from medseg.config import InferConfig
from medseg.io.bundle import ModelBundle
from medseg.nets import create_model, model_info
from medseg.pipelines.brats import CHANNELS, LABELS_2021, SCHEME


def untrained_bundle(name: str, patch: int = 128, sw_batch_size: int = 2) -> ModelBundle:
    """Seeded random weights of a registered network, roi `patch`^3 (position embeddings laid out for it where
    the model has them), training statistics of a typical MRI, overlap 0.5, gaussian, no post-processing."""
    torch.manual_seed(0)
    kwargs = {"img_size": patch} if model_info(name).img_size_kwarg else {}
    model = create_model(name, **kwargs)
    return ModelBundle(
        name, kwargs, model.state_dict(), "brats", list(CHANNELS), SCHEME, LABELS_2021, [patch] * 3,
        [[500.0, 200.0]] * 4, infer=InferConfig(sw_batch_size=sw_batch_size, postprocess={}),
    )  # fmt: skip
