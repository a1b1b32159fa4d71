"""Sub-quadratic self-attention blocks for long 3D token sequences.

`SpatialReductionAttention` (PVT / SegFormer): keys and values come from the token grid shrunk by a strided
convolution, so attention costs N x N / r^3. `LinearAttention` (Shen et al. 2021, "Efficient Attention"): softmax over
the channels of each query and over the positions of the keys, so the (C x C) context replaces the (N x N) map and
memory grows linearly with N. Both take channels-last tokens with their grid, and a key mask so missing modalities
take no part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from monai.networks.blocks import MLPBlock
from torch import nn


class SpatialReductionAttention(nn.Module):
    """Multi-head self-attention whose keys and values are pooled by a stride-`sr_ratio` convolution.

    Args:
        dim: token channels.
        num_heads: heads; `dim % num_heads == 0`.
        sr_ratio: spatial reduction of keys/values per axis (1 = full attention).
    Shapes: tokens `(B, D*H*W, C)` on a `(D, H, W)` grid -> same.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if sr_ratio < 1:
            raise ValueError("sr_ratio must be >= 1")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv3d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        d, h, w = grid
        kv_in = tokens
        if self.sr_ratio > 1:
            reduced = self.sr(rearrange(tokens, "b (d h w) c -> b c d h w", d=d, h=h, w=w))
            kv_in = self.sr_norm(rearrange(reduced, "b c d h w -> b (d h w) c"))
        q = rearrange(self.q(tokens), "b n (k c) -> b k n c", k=self.num_heads)
        k, v = rearrange(self.kv(kv_in), "b n (t k c) -> t b k n c", t=2, k=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b k n c -> b n (k c)"))


class LinearAttention(nn.Module):
    """Efficient attention (Shen et al. 2021): out = softmax_channels(Q) (softmax_positions(K)^T V), per head.

    Memory and time grow linearly with the number of tokens (no N x N map). Masked keys get -inf before the
    softmax over positions, so they contribute nothing to the context.

    Args:
        dim: token channels.
        num_heads: heads; `dim % num_heads == 0`.
    Shapes: tokens `(B, N, C)`, key mask `(B, N)` bool or None -> `(B, N, C)`.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(tokens), "b n (t k c) -> t b k n c", t=3, k=self.num_heads)
        q = q.softmax(dim=-1)
        if key_mask is not None:
            k = k.masked_fill(~key_mask[:, None, :, None], float("-inf"))
        k = k.softmax(dim=-2)  # over positions: each channel of K is a distribution over the (present) tokens
        context = torch.einsum("bknc,bkne->bkce", k, v)
        out = torch.einsum("bknc,bkce->bkne", q, context)
        return self.proj(rearrange(out, "b k n c -> b n (k c)"))


class LinearTransformerBlock(nn.Module):
    """Pre-norm transformer block with `LinearAttention` and MONAI's `MLPBlock` (GELU).

    Shapes: tokens `(B, N, C)`, key mask `(B, N)` bool or None -> `(B, N, C)`.
    """

    def __init__(self, dim: int, mlp_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, dropout)

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm1(tokens), key_mask)
        return tokens + self.mlp(self.norm2(tokens))
