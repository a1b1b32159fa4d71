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


def test_linear_attention_matches_its_formula_and_ignores_masked_keys():
    from medseg.nets.blocks.efficient_attention import LinearAttention

    torch.manual_seed(0)
    attn = LinearAttention(16, num_heads=2).eval()
    x = torch.randn(2, 10, 16)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads = [slice(0, 8), slice(8, 16)]
    expected = torch.cat(
        [q[..., h].softmax(-1) @ (k[..., h].softmax(1).transpose(1, 2) @ v[..., h]) for h in heads], -1
    )
    torch.testing.assert_close(attn(x), attn.proj(expected))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, 6:] = False
    changed = x.clone()
    changed[:, 6:] = torch.randn(2, 4, 16) * 10
    out, out_changed = attn(x, mask), attn(changed, mask)
    torch.testing.assert_close(out[:, :6], out_changed[:, :6])  # queries of kept tokens see only kept keys


def test_efficient_bottleneck_masks_modalities_and_runs_larger_patches():
    torch.manual_seed(0)
    full = create_model("transunet3d_tiny", img_size=32)
    model = create_model("transunet3d_tiny", img_size=32, attention="efficient").eval()
    assert model.vit.attention == "efficient" and full.vit.attention == "full"
    x = torch.randn(1, 4, 32, 32, 32)
    mask = torch.tensor([[True, False, True, True]])
    changed = x.clone()
    changed[0, 1] = torch.randn(32, 32, 32) * 10
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), model(changed, mask))
        assert model(torch.randn(1, 4, 64, 48, 32)).shape == (1, 3, 64, 48, 32)
    with pytest.raises(ValueError, match="attention must be"):
        create_model("transunet3d_tiny", attention="linear")
