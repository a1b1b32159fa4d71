"""Properties of TransUNet-3D beyond the shared battery."""

from __future__ import annotations

import pytest
import torch

from medseg.nets import create_model


def _first_stage(model, x: torch.Tensor) -> torch.Tensor:
    h = model.stem(x)
    return model.encoder[0](h)


@pytest.mark.parametrize(("stem", "blind"), [(False, True), (True, False)])
def test_the_intensity_stem_lets_a_single_modality_encoder_see_intensity_levels(stem, blind):
    """Without the stem, instance norm right after the first convolution makes a window's first-stage features
    identical whether a modality is bright or dark (here: scaled by 2): the cause of the scattered false
    components on healthy tissue (benchmarks/RESULTS.md). With it, the level reaches the network."""
    torch.manual_seed(0)
    model = create_model("transunet3d_tiny", img_size=32, intensity_stem=stem).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.InstanceNorm3d):
            m.eps = 1e-12  # exact invariance, whatever the random weights' scale
    x = torch.rand(4, 1, 32, 32, 32) + 0.5  # one modality per batch item, folded as the model folds them
    with torch.no_grad():
        change = (_first_stage(model, x) - _first_stage(model, 2 * x)).abs().max().item()
    assert (change < 1e-3) if blind else (change > 0.1)
