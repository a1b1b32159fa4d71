"""TransUNet-3D (Chen et al. 2021, made 3D) with optional cross-modal attention.

A residual CNN encoder (MONAI `UnetResBlock`) gives skips at 1/2, 1/4 and 1/8; a ViT runs over patch
tokens at 1/16 with learned 3D position embeddings; a cascaded upsampling decoder (MONAI `UnetrUpBlock`)
joins the skips. With `cross_modal=True` the encoder is shared across modalities (folded into the batch),
modalities attend to each other after every stage and globally at the bottleneck, and skips are fused by
masked attention pooling. `cross_modal=False` is the classic early-fusion model (M input channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from monai.networks.blocks import UnetOutBlock, UnetResBlock, UnetrUpBlock
from torch import nn

from medseg.nets._registry import register_model
from medseg.nets.base import SegmentationModel
from medseg.nets.blocks.cross_modal import (
    CrossModalAttention,
    GlobalCrossModalTransformer,
    MaskedModalityPool,
    ModalityEmbedding,
    fold_modalities,
    supervised_outputs,
)

_NORM = ("instance", {"affine": True})  # per-sample norm: folded modalities never mix through statistics
_ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})


class TransUNet3D(SegmentationModel):
    """Hybrid CNN-Transformer 3D segmentation network.

    Args:
        in_channels: number of input modalities M.
        out_channels: number of output (region) channels.
        features: CNN channels at 1/2, 1/4 and 1/8 resolution.
        hidden_size: ViT width at 1/16 resolution.
        num_layers: ViT depth.
        num_heads: ViT heads (`hidden_size % num_heads == 0`); cross-modal blocks use min(heads, 4).
        mlp_dim: ViT MLP width.
        attention: bottleneck attention, `full` (softmax, O(N^2) in tokens) or `efficient` (linear attention, O(N)).
        img_size: patch size the position embeddings are laid out for (interpolated for other sizes).
        intensity_stem: a normalisation-free convolution before the first residual block, so the encoder sees each
            modality's (case-normalised) intensity level, not only contrast within the window.
        cross_modal: shared per-modality encoder with cross-modal attention, or early fusion.
        modality_dropout: probability of masking each modality per sample during training.
        dropout: ViT dropout.
        checkpointing: recompute ViT activations in backward (less memory, ~30% slower steps).
        deep_supervision: in training mode return [logits, logits at 1/2, 1/4, 1/8] for a deep-supervision loss.
    Shapes: x `(B, M, D, H, W)` with D, H, W multiples of 16 -> logits `(B, out_channels, D, H, W)`.
    """

    stride = 16

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        features: tuple[int, int, int] = (16, 32, 64),
        hidden_size: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        mlp_dim: int = 1024,
        attention: str = "full",
        img_size: int = 128,
        intensity_stem: bool = True,
        cross_modal: bool = True,
        modality_dropout: float = 0.0,
        dropout: float = 0.0,
        checkpointing: bool = False,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        if img_size % self.stride:
            raise ValueError(f"img_size {img_size} must be a multiple of {self.stride}")
        if not 0 <= modality_dropout < 1:
            raise ValueError("modality_dropout must be in [0, 1)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.cross_modal = cross_modal
        self.supports_modality_mask = cross_modal
        self.modality_dropout = modality_dropout
        f1, f2, f3 = features
        enc_in = 1 if cross_modal else in_channels
        # Instance norm right after the first convolution makes a single-modality encoder blind to the modality's
        # level: every path of the first block is normalised per window, so a window's output is invariant to
        # scaling (and, but for padding, shifting) one modality, and the brightest healthy tissue of a window
        # without tumour (grey matter on FLAIR) reads as edema. A plain strided conv + activation first keeps the
        # level (at half resolution: a full-resolution stem doubled the CPU step time).
        self.stem = (
            nn.Sequential(nn.Conv3d(enc_in, f1, 3, stride=2, padding=1), nn.LeakyReLU(0.01, inplace=True))
            if intensity_stem
            else nn.Identity()
        )
        self.encoder = nn.ModuleList(
            [
                UnetResBlock(
                    3,
                    f1 if intensity_stem else enc_in,
                    f1,
                    3,
                    1 if intensity_stem else 2,
                    norm_name=_NORM,
                    act_name=_ACT,
                ),
                UnetResBlock(3, f1, f2, 3, 2, norm_name=_NORM, act_name=_ACT),
                UnetResBlock(3, f2, f3, 3, 2, norm_name=_NORM, act_name=_ACT),
            ]
        )
        self.patch_embed = nn.Conv3d(f3, hidden_size, kernel_size=2, stride=2)
        grid = img_size // self.stride
        self.pos_embed = nn.Parameter(torch.zeros(1, hidden_size, grid, grid, grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.vit = GlobalCrossModalTransformer(
            hidden_size, num_layers, num_heads, mlp_dim, dropout, checkpointing, attention
        )
        self.deep_supervision = deep_supervision
        if deep_supervision:
            self.aux_heads = nn.ModuleList(UnetOutBlock(3, f, out_channels) for f in (f1, f2, f3))
        if cross_modal:
            self.modality_embed = ModalityEmbedding(in_channels, f1)
            self.token_modality_embed = ModalityEmbedding(in_channels, hidden_size)
            self.cross_attn = nn.ModuleList(CrossModalAttention(f, min(4, f // 8) or 1) for f in features)
            self.pools = nn.ModuleList(MaskedModalityPool(f) for f in (*features, hidden_size))
        self.decoder = nn.ModuleList(
            [
                UnetrUpBlock(3, hidden_size, f3, 3, 2, norm_name=_NORM, res_block=True),
                UnetrUpBlock(3, f3, f2, 3, 2, norm_name=_NORM, res_block=True),
                UnetrUpBlock(3, f2, f1, 3, 2, norm_name=_NORM, res_block=True),
            ]
        )
        self.final_up = nn.ConvTranspose3d(f1, f1, kernel_size=2, stride=2)
        self.final_block = UnetResBlock(3, f1, f1, 3, 1, norm_name=_NORM, act_name=_ACT)
        self.head = UnetOutBlock(3, f1, out_channels)

    def _pos_embed(self, grid: tuple[int, int, int]) -> torch.Tensor:
        pos = self.pos_embed
        if tuple(pos.shape[2:]) != grid:
            pos = F.interpolate(pos, size=grid, mode="trilinear", align_corners=False)
        return rearrange(pos, "1 c d h w -> 1 (d h w) c")

    def forward(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input_shape(x)
        h, m, mask = fold_modalities(
            x, modality_mask, self.cross_modal, self.modality_dropout if self.training else 0.0
        )
        skips = []
        h = self.stem(h)
        for i, stage in enumerate(self.encoder):
            h = stage(h)
            if self.cross_modal:
                if i == 0:
                    h = self.modality_embed(h, m)
                h = self.cross_attn[i](h, m, mask)
                skips.append(self.pools[i](h, m, mask))
            else:
                skips.append(h)
        tokens = self.patch_embed(h)
        grid = tuple(tokens.shape[2:])
        if self.cross_modal:
            tokens = self.token_modality_embed(tokens, m)
        n = grid[0] * grid[1] * grid[2]
        tokens = rearrange(tokens, "(b m) c d h w -> b m (d h w) c", m=m) + self._pos_embed(grid)[:, None]
        tokens = self.vit(rearrange(tokens, "b m n c -> b (m n) c"), mask, n)
        d, hh, w = grid
        h = rearrange(tokens, "b (m d h w) c -> (b m) c d h w", m=m, d=d, h=hh, w=w)
        h = self.pools[-1](h, m, mask) if self.cross_modal else h
        decoded = []
        for block, skip in zip(self.decoder, reversed(skips), strict=True):
            h = block(h, skip)
            decoded.append(h)
        logits = self.head(self.final_block(self.final_up(h)))
        if self.deep_supervision and self.training:
            return supervised_outputs(logits, decoded[::-1], self.aux_heads)
        return logits


# Larger sizes differ from tiny only in widths and depths: the battery runs them at tiny widths.
_SMALLEST = {
    "features": (8, 16, 32),
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "mlp_dim": 128,
    "img_size": 32,
}


@register_model(family="transunet3d", cross_modal=True, img_size_kwarg=True, test_kwargs={"img_size": 32})
def transunet3d_tiny(**kw) -> TransUNet3D:
    """Test/CPU-smoke size."""
    return TransUNet3D(
        **{
            "features": (8, 16, 32),
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 4,
            "mlp_dim": 128,
            "img_size": 64,
            **kw,
        }
    )


@register_model(family="transunet3d", cross_modal=True, img_size_kwarg=True, test_kwargs=_SMALLEST)
def transunet3d_small(**kw) -> TransUNet3D:
    return TransUNet3D(
        **{
            "features": (16, 32, 64),
            "hidden_size": 256,
            "num_layers": 6,
            "num_heads": 8,
            "mlp_dim": 1024,
            "img_size": 128,
            **kw,
        }
    )


@register_model(family="transunet3d", cross_modal=True, img_size_kwarg=True, test_kwargs=_SMALLEST)
def transunet3d_base(**kw) -> TransUNet3D:
    """Paper size: ViT-B/16 width and depth over a 3-stage residual CNN."""
    return TransUNet3D(
        **{
            "features": (32, 64, 128),
            "hidden_size": 768,
            "num_layers": 12,
            "num_heads": 12,
            "mlp_dim": 3072,
            "img_size": 128,
            **kw,
        }
    )
