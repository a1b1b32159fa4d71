"""Structured pruning: channels really go, and a bundle rebuilds the pruned network from name, kwargs and layout."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from medseg.io.bundle import ModelBundle
from medseg.nets import create_model
from medseg.nets.pruning import prune_channels, structure_of
from tests.conftest import make_bundle

EXAMPLE = torch.randn(1, 4, 32, 32, 32)
AMOUNTS = (0.05, 0.3, 0.75, 0.8, 0.95)


def _convs(model) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv3d)]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("transunet3d_tiny", {"cross_modal": False, "img_size": 32}), ("segresnet", {"init_filters": 8})],
)
def test_pruning_removes_whole_channels_and_keeps_the_output_shape(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    pruned = prune_channels(model, EXAMPLE, 0.5)
    assert sum(p.numel() for p in pruned.parameters()) < 0.8 * sum(p.numel() for p in model.parameters())
    assert sum(_convs(pruned)) < 0.8 * sum(_convs(model))
    assert all(c % 4 == 0 for c in set(_convs(pruned)) - set(_convs(model)))  # counts oneDNN runs well
    with torch.no_grad():
        assert pruned(EXAMPLE).shape == (1, 3, 32, 32, 32)
    assert _convs(model) == _convs(create_model(name, **kwargs)), "the original is left untouched"


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("segresnet", {"init_filters": 8}), ("transunet3d_tiny", {"cross_modal": False, "img_size": 32})],
)
def test_a_larger_amount_removes_more(name, kwargs):
    """torch-pruning skips a layer group it would empty, and rounded kept channel counts down to multiples of 4:
    segresnet lost 47 % of its weights at 0.05, 74 % at 0.75 and none at 0.8 or above (still 'pruned', exit 0)."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    total = sum(p.numel() for p in model.parameters())
    removed = [1 - sum(p.numel() for p in prune_channels(model, EXAMPLE, a).parameters()) / total for a in AMOUNTS]
    assert all(a <= b for a, b in itertools.pairwise(removed)), removed
    assert removed[0] < 0.1 and 0.2 < removed[1] < 0.5 and removed[-1] > 0.7, removed  # not half the net at 0.05


def test_a_pruned_bundle_rebuilds_the_same_network_weights_only():
    torch.manual_seed(0)
    kwargs = {"in_channels": 4, "out_channels": 3, "cross_modal": False, "img_size": 32}
    model = create_model("transunet3d_tiny", **kwargs).eval()
    pruned = prune_channels(model, EXAMPLE, 0.5)
    structure = structure_of(pruned, create_model("transunet3d_tiny", **kwargs))
    assert structure and all(isinstance(v, (int, list)) for attrs in structure.values() for v in attrs.values())
    bundle = make_bundle()
    bundle.model_name, bundle.model_kwargs, bundle.structure = "transunet3d_tiny", kwargs, structure
    bundle.state_dict = pruned.state_dict()
    buf = io.BytesIO()
    torch.save(bundle.to_dict(), buf)
    buf.seek(0)
    rebuilt = ModelBundle.from_dict(torch.load(buf, weights_only=True)).build_model()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(EXAMPLE), pruned(EXAMPLE))


def test_amount_outside_zero_one_and_unprunable_families_are_refused():
    model = create_model("transunet3d_tiny", cross_modal=False, img_size=32)
    for amount in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"amount must be in \(0, 1\)"):
            prune_channels(model, EXAMPLE, amount)
    with pytest.raises(ValueError, match="cannot be pruned structurally"):
        prune_channels(create_model("swinunet3d_tiny"), torch.randn(1, 4, 64, 64, 64), 0.5)
