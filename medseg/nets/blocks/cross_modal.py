"""Cross-modal attention blocks: modalities are folded into the batch, `(b m) c d h w`, and mixed here.

Missing modalities are removed from attention keys and from pooling weights (not zero-filled), so their
values cannot influence the output.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from monai.networks.blocks import TransformerBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from medseg.nets.blocks.efficient_attention import LinearTransformerBlock


def resolve_mask(mask: torch.Tensor | None, b: int, m: int, device: torch.device) -> torch.Tensor:
    """(B, M) bool mask of present modalities (all present if None); at least one per sample."""
    if mask is None:
        return torch.ones(b, m, dtype=torch.bool, device=device)
    if mask.shape != (b, m):
        raise ValueError(f"modality_mask must have shape ({b}, {m}), got {tuple(mask.shape)}")
    mask = mask.to(device=device, dtype=torch.bool)
    if not mask.any(dim=1).all():
        raise ValueError("modality_mask masks every modality of a sample: at least one must be present")
    return mask


def drop_modalities(mask: torch.Tensor, p: float) -> torch.Tensor:
    """Randomly mask modalities with probability p, never all of a sample's present ones."""
    drop = torch.rand(mask.shape, device=mask.device) < p
    kept = mask & ~drop
    empty = ~kept.any(dim=1)
    return torch.where(empty[:, None], mask, kept)


def strip_unused_norms(module: nn.Module) -> nn.Module:
    """MONAI's TransformerBlock always allocates `norm_cross_attn`, even without cross-attention: replace
    it with Identity so every parameter gets a gradient (DDP refuses unused parameters otherwise)."""
    for block in module.modules():
        if isinstance(block, TransformerBlock) and not block.with_cross_attention:
            block.norm_cross_attn = nn.Identity()
    return module


def fold_modalities(
    x: torch.Tensor, modality_mask: torch.Tensor | None, cross_modal: bool, dropout: float
) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Shared entry of the cross-modal networks: (B, M, D, H, W) -> (features, m, (B, m) mask).

    Cross-modal: modalities folded into the batch `((B M), 1, D, H, W)`, m = M, mask validated and, when
    `dropout > 0` (training), randomly thinned. Early fusion: x unchanged with M input channels, m = 1.
    """
    b, num = x.shape[:2]
    if not cross_modal:
        if modality_mask is not None:
            raise ValueError("modality_mask needs cross_modal=True (early fusion cannot mask inputs)")
        return x, 1, torch.ones(b, 1, dtype=torch.bool, device=x.device)
    mask = resolve_mask(modality_mask, b, num, x.device)
    if dropout > 0:
        mask = drop_modalities(mask, dropout)
    return rearrange(x, "b m d h w -> (b m) 1 d h w"), num, mask


def supervised_outputs(main: torch.Tensor, aux: list[torch.Tensor], heads: nn.ModuleList) -> list[torch.Tensor]:
    """Training output with deep supervision: [full-resolution logits, coarser logits ...] (finest first),
    the form MONAI's `DeepSupervisionLoss` takes (it resizes the target to each)."""
    return [main, *(head(h) for head, h in zip(heads, aux, strict=True))]


class ModalityEmbedding(nn.Module):
    """A learned vector per modality, added to that modality's features `(b m) c ...`."""

    def __init__(self, num_modalities: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_modalities, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, m: int) -> torch.Tensor:
        x = rearrange(x, "(b m) c ... -> b m c ...", m=m)
        emb = self.weight.view(1, m, -1, *([1] * (x.ndim - 3)))
        return rearrange(x + emb, "b m c ... -> (b m) c ...")


class CrossModalAttention(nn.Module):
    """Attention across the M modality tokens at every spatial location (sequence length M).

    Args:
        dim: feature channels.
        num_heads: attention heads; `dim % num_heads == 0`.
    Shapes: x `((B M), C, D, H, W)`, mask `(B, M)` -> same as x.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)  # starts as identity: the per-modality encoder trains first
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, m: int, mask: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[2:]
        tokens = rearrange(x, "(b m) c d h w -> (b d h w) m c", m=m)
        q, k, v = rearrange(self.qkv(self.norm(tokens)), "n m (t k c) -> t n k m c", t=3, k=self.num_heads)
        # Sequence length is M (4): an explicit softmax over an (M x M) matrix per voxel beats SDPA kernels,
        # which are built for long sequences (cuDNN's fails in backward at ~10^6 batch x 4 tokens on H100).
        scores = torch.einsum("nkqc,nksc->nkqs", q, k) * q.shape[-1] ** -0.5
        key_mask = repeat(mask, "b m -> (b l) 1 1 m", l=d * h * w)
        attn = scores.masked_fill(~key_mask, float("-inf")).softmax(dim=-1)
        out = torch.einsum("nkqs,nksc->nkqc", attn, v)
        tokens = tokens + self.proj(rearrange(out, "n k m c -> n m (k c)"))
        return rearrange(tokens, "(b d h w) m c -> (b m) c d h w", d=d, h=h, w=w)


class MaskedModalityPool(nn.Module):
    """Fuse modalities into one feature map by attention pooling with masked weights.

    Shapes: x `((B M), C, D, H, W)`, mask `(B, M)` -> `(B, C, D, H, W)`.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Conv3d(dim, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, m: int, mask: torch.Tensor) -> torch.Tensor:
        if m == 1:
            return x
        x = rearrange(x, "(b m) c d h w -> b m c d h w", m=m)
        logits = rearrange(self.score(rearrange(x, "b m c d h w -> (b m) c d h w")), "(b m) 1 d h w -> b m d h w", m=m)
        logits = logits.masked_fill(~mask[:, :, None, None, None], float("-inf"))
        weights = logits.softmax(dim=1)
        # A masked modality has weight exactly 0; zero its features too so non-finite values cannot leak.
        x = x * mask[:, :, None, None, None, None]
        return torch.einsum("bmdhw,bmcdhw->bcdhw", weights, x)


class GlobalCrossModalTransformer(nn.Module):
    """Bottleneck ViT over the concatenated tokens of all modalities.

    `attention="full"`: MONAI `TransformerBlock` with SDPA (memory and time O(N^2) in the M*N tokens);
    `"efficient"`: `LinearTransformerBlock` (linear attention, O(N)), for patches whose token count makes full
    attention too large. Masked modalities' tokens are never attended to in either.
    Shapes: tokens `(B, M*N, C)`, key mask `(B, M)` -> `(B, M*N, C)`.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        checkpointing: bool = False,
        attention: str = "full",
    ) -> None:
        super().__init__()
        if attention not in ("full", "efficient"):
            raise ValueError(f"attention must be 'full' or 'efficient', got {attention!r}")
        self.checkpointing = checkpointing
        self.attention = attention
        if attention == "full":
            blocks = nn.ModuleList(
                TransformerBlock(dim, mlp_dim, num_heads, dropout, qkv_bias=True, use_flash_attention=True)
                for _ in range(depth)
            )
        else:
            blocks = nn.ModuleList(LinearTransformerBlock(dim, mlp_dim, num_heads, dropout) for _ in range(depth))
        self.blocks = strip_unused_norms(blocks)
        self.norm = nn.LayerNorm(dim)

    def _run(self, block: nn.Module, tokens: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        if self.attention == "full":
            return block(tokens, None, key_mask)
        return block(tokens, key_mask)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
        per_token = rearrange(mask[:, :, None].expand(-1, -1, n), "b m n -> b (m n)")
        # SDPA's boolean mask broadcasts over heads and queries: True = this key takes part.
        key_mask = per_token[:, None, None, :] if self.attention == "full" else per_token
        for block in self.blocks:
            if self.checkpointing and self.training:
                # Recompute activations in backward: memory of one block instead of all (training only).
                tokens = checkpoint(self._run, block, tokens, key_mask, use_reentrant=False)
            else:
                tokens = self._run(block, tokens, key_mask)
        return self.norm(tokens)
