"""Every registered model goes through this battery automatically (tiny variants, CPU)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.nets import create_model, list_models, model_info


def build(name: str, **kw) -> torch.nn.Module:
    """The model at its registered smallest configuration (same code path as its real size)."""
    torch.manual_seed(0)
    return create_model(name, **{**model_info(name).test_kwargs, **kw})


def valid_size(model, name: str | None = None) -> tuple[int, int, int]:
    if model.fixed_size:
        return model.fixed_size
    s = model_info(name).test_size if name else 32
    return (max(s, model.stride),) * 3


MODELS = list_models()
CROSS_MODAL = [n for n in MODELS if model_info(n).cross_modal]


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_builds_at_its_real_size_and_runs_on_the_meta_device(name):
    """The real configuration (base/small widths and depths, not only the test one): built and pushed through a
    forward on the meta device, where no memory is allocated, so the 90 M-parameter sizes cost nothing."""
    info = model_info(name)
    try:
        with torch.device("meta"):
            model = create_model(name)
    except RuntimeError as exc:  # MONAI SwinUNETR computes on tensors while constructing: build it for real
        assert "meta" in str(exc)
        assert sum(p.numel() for p in create_model(name).parameters()) > 1e6
        return
    size = model.fixed_size or (max(info.test_size, model.stride, 32),) * 3
    with torch.device("meta"):
        out = model.eval()(torch.empty(1, 4, *size))
    assert out.shape == (1, 3, *size)


GOLDEN = Path(__file__).with_name("golden_outputs.json")


def _deterministic(model: torch.nn.Module) -> torch.nn.Module:
    """Weights from a fixed formula, independent of torch's RNG and init schemes: the output then depends only
    on the architecture and forward code, which is what a bundle rebuilt from name + kwargs relies on."""
    with torch.no_grad():
        for k, (_, t) in enumerate(sorted(model.state_dict().items())):
            if t.is_floating_point():
                t.copy_(0.05 * torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 0.37 + k).view_as(t))
    return model.eval()


def _signature(name: str) -> list[float]:
    model = _deterministic(build(name))
    size = valid_size(model, name)
    grid = torch.arange(4 * size[0] * size[1] * size[2], dtype=torch.float64)
    x = torch.cos(grid * 0.011).view(1, 4, *size).float()
    with torch.no_grad():
        y = model(x).double().flatten()
    picks = torch.linspace(0, y.numel() - 1, 12).long()
    return [float(y.mean()), float(y.std()), *(float(v) for v in y[picks])]


@pytest.mark.parametrize("name", MODELS)
def test_golden_output_guards_bundles_rebuilt_from_name_and_kwargs(name):
    """A saved bundle stores weights plus model name and kwargs, and is rebuilt by `create_model`. If a change to a
    network's code alters what the same weights compute, old bundles silently predict differently: this fails.
    After an intended change, regenerate with MEDSEG_UPDATE_GOLDEN=1 and say so in the commit."""
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    got = _signature(name)
    if os.environ.get("MEDSEG_UPDATE_GOLDEN") == "1":
        golden[name] = got
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    assert name in golden, "no golden output: run once with MEDSEG_UPDATE_GOLDEN=1"
    np.testing.assert_allclose(got, golden[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_shape(name):
    model = build(name)
    x = torch.randn(1, 4, *valid_size(model, name), requires_grad=False)
    y = model(x)
    assert y.shape == (1, 3, *x.shape[2:])
    y.mean().backward()
    # Every parameter takes part (DDP refuses unused ones).
    assert not [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.parametrize("name", MODELS)
def test_the_smallest_size_it_accepts_runs_and_a_smaller_one_is_refused(name):
    """What the contract accepts must run (training's config check, MLflow's example input): SwinUNETR's bottleneck
    instance norm fails at one voxel a side, so 32^3 (a multiple of its stride) is refused, not a crash mid-run."""
    model = build(name).eval()
    if model.fixed_size:
        return
    s = max(model.stride, model.min_size)
    with torch.no_grad():
        assert model(torch.randn(1, 4, s, s, s)).shape == (1, 3, s, s, s)
    if model.min_size > model.stride:
        with pytest.raises(ValueError, match=f"at least {model.min_size}"):
            model.check_input_shape(torch.zeros(1, 4, s - model.stride, s, s, device="meta"))


@pytest.mark.parametrize("name", MODELS)
def test_rejects_invalid_size(name):
    model = build(name)
    size = valid_size(model, name)
    bad = (size[0] + 8, size[1], size[2]) if model.stride > 8 or model.fixed_size else (size[0] + 4, *size[1:])
    with pytest.raises(ValueError, match=r"multiples|needs spatial size"):
        model(torch.randn(1, 4, *bad))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(1, 3, *size))


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip(name):
    model = build(name).eval()
    x = torch.randn(1, 4, *valid_size(model, name))
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
