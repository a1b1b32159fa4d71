"""Model size figures: parameters, and forward FLOPs counted on the meta device (no compute, no memory)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from medseg.nets._registry import create_model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_figures(name: str, size: int = 128, in_channels: int = 4, out_channels: int = 3) -> dict:
    """Parameters and forward GFLOPs for a (1, in_channels, size, size, size) input; GFLOPs None, with the reason
    in `refused`, where the network does not take that size (not a multiple of its stride, or too small)."""
    kwargs = {"in_channels": in_channels, "out_channels": out_channels}
    if name == "unetr":
        kwargs["img_size"] = size
    # Built on the CPU (some MONAI constructors call .item()), then moved to meta to count for free.
    model = create_model(name, **kwargs).eval().to("meta")
    refused = model.size_problem((size, size, size))
    figures = {"name": name, "params_m": count_parameters(model) / 1e6, "gflops": None, "refused": refused}
    if refused:
        return figures
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, in_channels, size, size, size, device="meta"))
    return figures | {"gflops": counter.get_total_flops() / 1e9}


def bundle_figures(bundle, size: int = 128) -> dict:
    """Parameters and forward GFLOPs of a trained model as its bundle rebuilds it (pruned layouts included)."""
    model = bundle.build_model().to("meta")
    x = torch.empty(1, len(bundle.channels), size, size, size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return {"params_m": count_parameters(model) / 1e6, "gflops": counter.get_total_flops() / 1e9}
