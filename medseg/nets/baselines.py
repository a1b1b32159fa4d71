"""MONAI baselines (early fusion: modalities stacked as input channels), built from monai.networks.nets."""

from __future__ import annotations

import torch
from monai.networks.nets import UNETR, SegResNet, SwinUNETR
from torch import nn

from medseg.nets._registry import register_model
from medseg.nets.base import SegmentationModel
from medseg.nets.blocks.cross_modal import strip_unused_norms


class MonaiBaseline(SegmentationModel):
    """Wraps a MONAI network so it follows the medseg model contract (shape checks, stride)."""

    def __init__(
        self, net: nn.Module, in_channels: int, out_channels: int, stride: int, fixed_size=None, min_size: int = 1
    ) -> None:
        super().__init__()
        self.net = strip_unused_norms(net)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride = stride
        self.fixed_size = fixed_size
        self.min_size = min_size

    def forward(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input_shape(x)
        if modality_mask is not None:
            raise ValueError(f"{type(self.net).__name__} cannot mask modalities (early fusion)")
        return self.net(x)


@register_model(family="segresnet", test_kwargs={"init_filters": 8})
def segresnet(in_channels: int = 4, out_channels: int = 3, init_filters: int = 16, **kw) -> MonaiBaseline:
    """MONAI SegResNet (Myronenko 2018), the BraTS 2018 winner's backbone."""
    net = SegResNet(3, init_filters, in_channels, out_channels, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), **kw)
    return MonaiBaseline(net, in_channels, out_channels, stride=8)


@register_model(family="swinunetr", test_kwargs={"feature_size": 12, "depths": (1, 1, 1, 1)}, test_size=64)
def swinunetr(in_channels: int = 4, out_channels: int = 3, feature_size: int = 48, **kw) -> MonaiBaseline:
    """MONAI SwinUNETR (Hatamizadeh et al. 2022); MONAI >= 1.5 takes no img_size."""
    net = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, **kw)
    # its bottleneck's instance norm needs 2 voxels a side at 1/32: 64, not 32 (a one-voxel stage fails)
    return MonaiBaseline(net, in_channels, out_channels, stride=32, min_size=64)


@register_model(
    family="unetr",
    img_size_kwarg=True,
    test_kwargs={"img_size": 32, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 4},
)
def unetr(in_channels: int = 4, out_channels: int = 3, img_size: int = 128, **kw) -> MonaiBaseline:
    """MONAI UNETR (Hatamizadeh et al. 2021); fixed input size (learned position embeddings)."""
    size = (img_size,) * 3
    net = UNETR(in_channels, out_channels, size, **kw)
    return MonaiBaseline(net, in_channels, out_channels, stride=16, fixed_size=size)
