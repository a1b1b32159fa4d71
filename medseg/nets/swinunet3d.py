"""Swin-Unet-3D (Cao et al. 2021, made 3D) with optional cross-modal attention.

Patch partition (4^3), MONAI 3D Swin stages (`BasicLayer`: shifted windows, relative position bias) with
patch merging down, patch expanding up (ours: MONAI has none), skip connections and a final x4 expand.
Cross-modal mode shares the encoder over modalities, adds cross-modal attention after every stage, global
attention over all modalities' bottleneck tokens, and fuses skips by masked attention pooling.
"""

from __future__ import annotations

import torch
from einops import rearrange
from monai.networks.nets.swin_unetr import BasicLayer, PatchMergingV2
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


class PatchExpanding(nn.Module):
    """Upsample x`scale` by a linear layer that spreads each token over scale^3 voxels (channels-first IO).

    Shapes: `(B, C, D, H, W)` -> `(B, out_dim, scale*D, scale*H, scale*W)`.
    """

    def __init__(self, dim: int, out_dim: int, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, out_dim * scale**3, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(rearrange(x, "b c d h w -> b d h w c"))
        s = self.scale
        x = rearrange(x, "b d h w (p1 p2 p3 c) -> b (d p1) (h p2) (w p3) c", p1=s, p2=s, p3=s)
        return rearrange(self.norm(x), "b d h w c -> b c d h w")


def _swin_stage(dim: int, depth: int, heads: int, window: int, checkpointing: bool) -> BasicLayer:
    return BasicLayer(
        dim, depth, heads, (window,) * 3, [0.0] * depth, qkv_bias=True, downsample=None, use_checkpoint=checkpointing
    )


class SwinUNet3D(SegmentationModel):
    """Pure-Swin 3D U-shaped segmentation network.

    Args:
        in_channels: number of input modalities M.
        out_channels: number of output (region) channels.
        embed_dim: channels after patch partition; stage i has embed_dim * 2**i.
        depths: Swin blocks per encoder stage (the decoder mirrors them).
        num_heads: attention heads per stage.
        window_size: 3D window edge in tokens.
        bottleneck_layers: global cross-modal transformer layers at the deepest stage.
        cross_modal: shared per-modality encoder with cross-modal attention, or early fusion.
        modality_dropout: probability of masking each modality per sample during training.
        checkpointing: recompute Swin block and bottleneck activations in backward (less memory, slower).
        deep_supervision: in training mode also return logits from every decoder stage (finest first).
    Shapes: x `(B, M, D, H, W)` with sizes multiples of 4 * 2**(len(depths)-1) -> `(B, out, D, H, W)`.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        embed_dim: int = 48,
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 4,
        bottleneck_layers: int = 1,
        cross_modal: bool = True,
        modality_dropout: float = 0.0,
        checkpointing: bool = False,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        dims = [embed_dim * 2**i for i in range(len(depths))]
        for d, h in zip(dims, num_heads, strict=True):
            if d % h:
                raise ValueError(f"stage width {d} must be divisible by its heads {h}")
        if not 0 <= modality_dropout < 1:
            raise ValueError("modality_dropout must be in [0, 1)")
        self.stride = 4 * 2 ** (len(depths) - 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.cross_modal = cross_modal
        self.supports_modality_mask = cross_modal
        self.modality_dropout = modality_dropout
        self.patch_embed = nn.Conv3d(1 if cross_modal else in_channels, embed_dim, kernel_size=4, stride=4)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.encoder = nn.ModuleList(
            _swin_stage(d, n, h, window_size, checkpointing) for d, n, h in zip(dims, depths, num_heads, strict=True)
        )
        self.merges = nn.ModuleList(PatchMergingV2(d, spatial_dims=3) for d in dims[:-1])
        deepest = dims[-1]
        self.bottleneck = GlobalCrossModalTransformer(
            deepest, bottleneck_layers, num_heads[-1], 4 * deepest, checkpointing=checkpointing
        )
        if cross_modal:
            self.modality_embed = ModalityEmbedding(in_channels, embed_dim)
            self.cross_attn = nn.ModuleList(CrossModalAttention(d, h) for d, h in zip(dims, num_heads, strict=True))
            self.pools = nn.ModuleList(MaskedModalityPool(d) for d in dims)
        self.expands = nn.ModuleList(PatchExpanding(dims[i + 1], dims[i]) for i in range(len(dims) - 1))
        self.concat_proj = nn.ModuleList(nn.Conv3d(2 * d, d, kernel_size=1) for d in dims[:-1])
        self.decoder = nn.ModuleList(
            _swin_stage(d, n, h, window_size, checkpointing)
            for d, n, h in zip(dims[:-1], depths[:-1], num_heads[:-1], strict=True)
        )
        self.final_expand = PatchExpanding(embed_dim, embed_dim, scale=4)
        self.deep_supervision = deep_supervision
        if deep_supervision:
            self.aux_heads = nn.ModuleList(nn.Conv3d(d, out_channels, kernel_size=1) for d in dims[:-1])
        self.head = nn.Conv3d(embed_dim, out_channels, kernel_size=1)

    def _fuse(self, h: torch.Tensor, i: int, m: int, mask: torch.Tensor) -> torch.Tensor:
        return self.pools[i](h, m, mask) if self.cross_modal else h

    def forward(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input_shape(x)
        h, m, mask = fold_modalities(
            x, modality_mask, self.cross_modal, self.modality_dropout if self.training else 0.0
        )
        h = self.patch_embed(h)
        h = rearrange(self.embed_norm(rearrange(h, "b c d h w -> b d h w c")), "b d h w c -> b c d h w")
        if self.cross_modal:
            h = self.modality_embed(h, m)
        skips = []
        for i, stage in enumerate(self.encoder):
            h = stage(h)
            if self.cross_modal:
                h = self.cross_attn[i](h, m, mask)
            if i < len(self.merges):
                skips.append(self._fuse(h, i, m, mask))
                h = rearrange(self.merges[i](rearrange(h, "b c d h w -> b d h w c")), "b d h w c -> b c d h w")
        d, hh, w = h.shape[2:]
        tokens = self.bottleneck(rearrange(h, "(b m) c d h w -> b (m d h w) c", m=m), mask, d * hh * w)
        h = rearrange(tokens, "b (m d h w) c -> (b m) c d h w", m=m, d=d, h=hh, w=w)
        h = self._fuse(h, len(self.encoder) - 1, m, mask)
        decoded = []
        for i in reversed(range(len(self.decoder))):
            h = self.expands[i](h)
            h = self.concat_proj[i](torch.cat([h, skips[i]], dim=1))
            h = self.decoder[i](h)
            decoded.append(h)
        logits = self.head(self.final_expand(h))
        if self.deep_supervision and self.training:
            return supervised_outputs(logits, decoded[::-1], self.aux_heads)
        return logits


# 4-stage sizes (stride 32) at the smallest widths: the battery exercises that path, not only tiny's 3 stages.
_SMALLEST_4_STAGES = {"embed_dim": 12, "depths": (1, 1, 1, 1), "num_heads": (3, 3, 3, 3)}


@register_model(family="swinunet3d", cross_modal=True)
def swinunet3d_tiny(**kw) -> SwinUNet3D:
    """Test/CPU-smoke size (3 stages, stride 16)."""
    return SwinUNet3D(**{"embed_dim": 24, "depths": (2, 2, 2), "num_heads": (3, 6, 12), **kw})


@register_model(family="swinunet3d", cross_modal=True, test_kwargs=_SMALLEST_4_STAGES)
def swinunet3d_small(**kw) -> SwinUNet3D:
    return SwinUNet3D(**{"embed_dim": 48, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24), **kw})


@register_model(family="swinunet3d", cross_modal=True, test_kwargs=_SMALLEST_4_STAGES)
def swinunet3d_base(**kw) -> SwinUNet3D:
    """Paper size: Swin-T depths (2, 2, 6, 2) at width 96, as in Swin-Unet."""
    return SwinUNet3D(**{"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), **kw})
