"""Every registered model goes through this battery automatically (tiny variants, CPU)."""

from __future__ import annotations

import io

import pytest
import torch

from medseg.nets import create_model, list_models

TINY = {
    "segresnet": {"init_filters": 8},
    "swinunetr": {"feature_size": 12, "depths": (1, 1, 1, 1)},
    "unetr": {"img_size": 32, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 4},
}


def tiny_kwargs(name: str) -> dict:
    if name.startswith(("transunet3d", "swinunet3d")):
        # Every size of a family shares the code; the battery checks the contract at tiny cost.
        family = name.split("_")[0]
        return {"_entry": f"{family}_tiny"}
    return TINY[name]


def build(name: str, **kw) -> torch.nn.Module:
    kwargs = {**tiny_kwargs(name), **kw}
    entry = kwargs.pop("_entry", name)
    torch.manual_seed(0)
    return create_model(entry, **kwargs)


def valid_size(model) -> tuple[int, int, int]:
    if model.fixed_size:
        return model.fixed_size
    # SwinUNETR instance-normalises its 1/32 features: it needs 2 voxels there while training.
    s = 64 if model.stride == 32 and not hasattr(model, "cross_modal") else max(32, model.stride)
    return (s, s, s)


MODELS = list_models()
CROSS_MODAL = [n for n in MODELS if n.endswith("_tiny")]


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_shape(name):
    model = build(name)
    x = torch.randn(1, 4, *valid_size(model), requires_grad=False)
    y = model(x)
    assert y.shape == (1, 3, *x.shape[2:])
    y.mean().backward()
    # Every parameter takes part (DDP refuses unused ones).
    assert not [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.parametrize("name", MODELS)
def test_rejects_invalid_size(name):
    model = build(name)
    size = valid_size(model)
    bad = (size[0] + 8, size[1], size[2]) if model.stride > 8 or model.fixed_size else (size[0] + 4, *size[1:])
    with pytest.raises(ValueError, match=r"multiples|needs spatial size"):
        model(torch.randn(1, 4, *bad))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(1, 3, *size))


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip(name):
    model = build(name).eval()
    x = torch.randn(1, 4, *valid_size(model))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = build(name).eval()
    torch.manual_seed(123)
    for p in other.parameters():
        p.data.normal_()
    other.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


@pytest.mark.parametrize("name", ["transunet3d_tiny", "swinunet3d_tiny"])
def test_larger_valid_size_works(name):
    model = build(name).eval()
    s = model.stride
    with torch.no_grad():
        assert model(torch.randn(1, 4, 2 * s, s, 3 * s)).shape == (1, 3, 2 * s, s, 3 * s)


def _activate_cross_attention(model):
    # Cross-modal projections start at zero (identity); randomise them so the tests exercise mixing.
    for mod in model.modules():
        if type(mod).__name__ == "CrossModalAttention":
            torch.nn.init.normal_(mod.proj.weight, std=0.2)


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_masked_modality_has_no_influence(name):
    model = build(name).eval()
    _activate_cross_attention(model)
    x = torch.randn(2, 4, 32, 32, 32)
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    changed = x.clone()
    changed[0, 1] = torch.randn(32, 32, 32) * 10
    with torch.no_grad():
        assert torch.equal(model(x, mask), model(changed, mask))
        # Without the mask the same change must matter (the test can detect influence).
        assert not torch.allclose(model(x), model(changed))


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_modality_permutation_equivariance(name):
    model = build(name).eval()
    _activate_cross_attention(model)
    x = torch.randn(1, 4, 32, 32, 32)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        ref = model(x)
        for emb in (m for m in model.modules() if type(m).__name__ == "ModalityEmbedding"):
            emb.weight.copy_(emb.weight[perm])
        out = model(x[:, perm])
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_all_masked_raises(name):
    model = build(name)
    with pytest.raises(ValueError, match="at least one"):
        model(torch.randn(1, 4, 32, 32, 32), torch.zeros(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_early_fusion_ablation_runs_and_refuses_masks(name):
    model = build(name, cross_modal=False)
    assert model(torch.randn(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    with pytest.raises(ValueError, match="cross_modal"):
        model(torch.randn(1, 4, 32, 32, 32), torch.ones(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_modality_dropout_never_drops_all(name):
    from medseg.nets.blocks.cross_modal import drop_modalities

    torch.manual_seed(0)
    mask = torch.ones(256, 4, dtype=torch.bool)
    mask[:, 0] = False
    dropped = drop_modalities(mask, 0.9)
    assert dropped.any(dim=1).all()
    assert not (dropped & ~mask).any()


@pytest.mark.parametrize("name", ["transunet3d_tiny", "swinunet3d_tiny"])
def test_torch_compile_smoke(name):
    model = build(name).eval()
    try:
        compiled = torch.compile(model, backend="eager")
    except Exception as exc:  # pragma: no cover - platform without dynamo
        pytest.skip(f"torch.compile unsupported: {exc}")
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_gradient_checkpointing_gives_the_same_gradients(name):
    x = torch.randn(1, 4, 32, 32, 32)
    grads = []
    for ckpt in (False, True):
        model = build(name, checkpointing=ckpt)
        model(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_deep_supervision_outputs_and_loss(name):
    from medseg.training.optim import build_loss

    model = build(name, deep_supervision=True)
    x = torch.randn(1, 4, 32, 32, 32)
    outputs = model(x)
    assert isinstance(outputs, list) and outputs[0].shape == (1, 3, 32, 32, 32)
    sizes = [o.shape[-1] for o in outputs]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) > 2
    target = (torch.rand(1, 3, 32, 32, 32) > 0.5).float()
    build_loss("dice_ce", deep_supervision=True)(outputs, target).backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(x).shape == (1, 3, 32, 32, 32)  # inference returns the full-resolution logits only
