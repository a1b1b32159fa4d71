"""SegFormer3D (Perera et al. 2024): a light hierarchical transformer with an all-MLP decoder, optionally cross-modal.

Four stages of overlapping patch embedding (strided convolution), spatial-reduction self-attention and Mix-FFN
(a depth-wise 3x3x3 convolution between the two linear layers instead of position embeddings, so any input size
works); the decoder projects every stage to one width, upsamples to 1/4, concatenates, fuses with a 1x1x1
convolution and upsamples the logits x4. With `cross_modal=True` the encoder is shared across modalities (folded
into the batch), modalities attend to each other after every stage and each stage's features are fused by masked
attention pooling before the decoder; `cross_modal=False` is the paper's early fusion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from medseg.nets._registry import register_model
from medseg.nets.base import SegmentationModel
from medseg.nets.blocks.cross_modal import (
    CrossModalAttention,
    MaskedModalityPool,
    ModalityEmbedding,
    fold_modalities,
    supervised_outputs,
)
from medseg.nets.blocks.efficient_attention import SpatialReductionAttention


class MixFFN(nn.Module):
    """Linear -> depth-wise 3x3x3 conv -> GELU -> linear: the convolution leaks position, so no embeddings.

    Shapes: tokens `(B, D*H*W, C)` on a `(D, H, W)` grid -> same.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv3d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        d, h, w = grid
        x = rearrange(self.fc1(tokens), "b (d h w) c -> b c d h w", d=d, h=h, w=w)
        x = rearrange(self.dwconv(x), "b c d h w -> b (d h w) c")
        return self.fc2(F.gelu(x))


class SegFormerBlock(nn.Module):
    """Pre-norm transformer block: spatial-reduction attention and Mix-FFN, each residual."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MixFFN(dim, mlp_ratio * dim)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm1(tokens), grid)
        return tokens + self.ffn(self.norm2(tokens), grid)


class SegFormerStage(nn.Module):
    """Overlapping patch embedding (conv, stride `stride`, kernel `2*stride - 1`) then transformer blocks.

    `embed_norm=False` leaves the embedding unnormalised: a LayerNorm over the channels of a one-modality patch
    removes its intensity level, and the level is what separates edema from bright healthy tissue (the finding
    behind TransUNet-3D's intensity stem, benchmarks/RESULTS.md).
    Shapes: `(B, C_in, D, H, W)` -> `(B, dim, D/stride, H/stride, W/stride)`.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        stride: int,
        depth: int,
        heads: int,
        sr_ratio: int,
        mlp_ratio: int,
        embed_norm: bool,
        checkpointing: bool,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        self.embed = nn.Conv3d(in_dim, dim, kernel_size=2 * stride - 1, stride=stride, padding=stride - 1)
        self.embed_norm = nn.LayerNorm(dim) if embed_norm else nn.Identity()
        self.blocks = nn.ModuleList(SegFormerBlock(dim, heads, sr_ratio, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        grid = tuple(x.shape[2:])
        tokens = self.embed_norm(rearrange(x, "b c d h w -> b (d h w) c"))
        for block in self.blocks:
            if self.checkpointing and self.training:  # recompute in backward: one block's activations in memory
                tokens = checkpoint(block, tokens, grid, use_reentrant=False)
            else:
                tokens = block(tokens, grid)
        d, h, w = grid
        return rearrange(self.norm(tokens), "b (d h w) c -> b c d h w", d=d, h=h, w=w)


class SegFormer3D(SegmentationModel):
    """Hierarchical transformer encoder + all-MLP decoder.

    Args:
        in_channels: number of input modalities M.
        out_channels: number of output (region) channels.
        dims: channels per stage (resolutions 1/4, 1/8, 1/16, 1/32 for four stages).
        depths: transformer blocks per stage.
        num_heads: attention heads per stage (`dims[i] % num_heads[i] == 0`).
        sr_ratios: key/value spatial reduction per stage (efficient attention; 1 = full).
        mlp_ratio: Mix-FFN width as a multiple of the stage width.
        decoder_dim: width every stage is projected to in the decoder.
        cross_modal: shared per-modality encoder with cross-modal attention, or early fusion.
        modality_dropout: probability of masking each modality per sample during training.
        checkpointing: recompute transformer block activations in backward (less memory, slower steps).
        deep_supervision: in training mode also return logits from the 1/8 and 1/16 decoder projections.
    Shapes: x `(B, M, D, H, W)` with sizes multiples of 4 * 2**(len(dims)-1) -> logits `(B, out, D, H, W)`.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        dims: tuple[int, ...] = (32, 64, 160, 256),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (1, 2, 5, 8),
        sr_ratios: tuple[int, ...] = (4, 2, 1, 1),
        mlp_ratio: int = 4,
        decoder_dim: int = 256,
        cross_modal: bool = True,
        modality_dropout: float = 0.0,
        checkpointing: bool = False,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if not len(dims) == len(depths) == len(num_heads) == len(sr_ratios):
            raise ValueError("dims, depths, num_heads and sr_ratios must have the same length")
        for d, h in zip(dims, num_heads, strict=True):
            if d % h:
                raise ValueError(f"stage width {d} must be divisible by its heads {h}")
        if not 0 <= modality_dropout < 1:
            raise ValueError("modality_dropout must be in [0, 1)")
        self.stride = 4 * 2 ** (len(dims) - 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.cross_modal = cross_modal
        self.supports_modality_mask = cross_modal
        self.modality_dropout = modality_dropout
        in_dims = (1 if cross_modal else in_channels, *dims[:-1])
        self.stages = nn.ModuleList(
            SegFormerStage(i, d, 4 if k == 0 else 2, n, h, r, mlp_ratio, k > 0, checkpointing)
            for k, (i, d, n, h, r) in enumerate(zip(in_dims, dims, depths, num_heads, sr_ratios, strict=True))
        )
        if cross_modal:
            self.modality_embed = ModalityEmbedding(in_channels, dims[0])
            self.cross_attn = nn.ModuleList(CrossModalAttention(d, min(4, d // 8) or 1) for d in dims)
            self.pools = nn.ModuleList(MaskedModalityPool(d) for d in dims)
        self.project = nn.ModuleList(nn.Conv3d(d, decoder_dim, kernel_size=1) for d in dims)
        self.fuse = nn.Sequential(
            nn.Conv3d(len(dims) * decoder_dim, decoder_dim, kernel_size=1, bias=False),
            nn.InstanceNorm3d(decoder_dim, affine=True),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv3d(decoder_dim, out_channels, kernel_size=1)
        self.deep_supervision = deep_supervision
        if deep_supervision:
            self.aux_heads = nn.ModuleList(nn.Conv3d(decoder_dim, out_channels, kernel_size=1) for _ in range(2))

    def forward(self, x: torch.Tensor, modality_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input_shape(x)
        h, m, mask = fold_modalities(
            x, modality_mask, self.cross_modal, self.modality_dropout if self.training else 0.0
        )
        features = []
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if self.cross_modal:
                if i == 0:
                    h = self.modality_embed(h, m)
                h = self.cross_attn[i](h, m, mask)
                features.append(self.pools[i](h, m, mask))
            else:
                features.append(h)
        size = features[0].shape[2:]
        projected = [proj(f) for proj, f in zip(self.project, features, strict=True)]
        upsampled = [p if i == 0 else F.interpolate(p, size=size, mode="trilinear") for i, p in enumerate(projected)]
        logits = F.interpolate(self.head(self.fuse(torch.cat(upsampled, dim=1))), scale_factor=4, mode="trilinear")
        if self.deep_supervision and self.training:
            return supervised_outputs(logits, projected[1:3], self.aux_heads)
        return logits


# The smallest widths that keep four stages and every head count: the battery runs the real code path at them.
_SMALLEST = {"dims": (8, 16, 40, 64), "depths": (1, 1, 1, 1), "decoder_dim": 32}


@register_model(family="segformer3d", cross_modal=True, test_kwargs=_SMALLEST)
def segformer3d_tiny(**kw) -> SegFormer3D:
    """Half the paper's widths (about a quarter of its parameters)."""
    return SegFormer3D(**{"dims": (16, 32, 80, 128), "decoder_dim": 128, **kw})


@register_model(family="segformer3d", cross_modal=True, test_kwargs=_SMALLEST)
def segformer3d_small(**kw) -> SegFormer3D:
    """The paper's configuration (4.5 M parameters with early fusion)."""
    return SegFormer3D(**{"dims": (32, 64, 160, 256), "decoder_dim": 256, **kw})
