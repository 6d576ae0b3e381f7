"""Multi-head gated attention MIL (ABMIL) slide aggregator, as in MADELEINE/CSCL (METHOD.md §1).

pre-MLP: [Linear(D→h)-LN-GELU-Drop(0.1)] ×2, then Linear(h→H·a) split into H heads of size a;
each head: gated attention (tanh ⊙ sigmoid, `attn_hidden` units, dropout 0.25) → softmax over the
tokens → weighted sum; the H pooled vectors are concatenated (H·a) and projected to the slide
embedding (Linear(H·a→E)) and, per token, to token embeddings (Linear(H·a→T)) used by GOT.
Paper sizes: h=512, H=4, a=512, E=512, T=128; all are configurable for tiny tests.
`mean_skip=True` adds a linear map of the masked mean of the input tokens to the slide embedding,
so the encoder starts from (a random projection of) mean pooling — the strongest baseline at small
data scale — instead of having to rediscover it through attention (off by default: paper model).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cscl.models.registry import register_model

# Model-size presets (GatedABMIL kwargs). {} = the paper sizes; "small" for CPU runs and tests.
ABMIL_PRESETS: dict[str, dict[str, int]] = {
    "paper": {},
    "small": dict(hidden=128, n_heads=2, head_dim=64, attn_hidden=64, embed_dim=64, token_dim=32),
}
SMALL_ABMIL = ABMIL_PRESETS["small"]


class GatedAttentionHead(nn.Module):
    """Gated attention scores for one head: w·(tanh(Va x) ⊙ σ(Ua x))."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.b = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w(self.a(x) * self.b(x)).squeeze(-1)


class GatedABMIL(nn.Module):
    """`forward(x [B,N,D], mask [B,N] bool valid|None) -> (slide [B,E], tokens [B,N,T], attn [B,N])`.

    `attn` is the head-averaged attention (sums to 1 over valid tokens); padded tokens get 0.
    A row with no valid token yields a finite (meaningless) embedding; callers mask it out.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 512,
        n_heads: int = 4,
        head_dim: int = 512,
        attn_hidden: int = 512,
        embed_dim: int = 512,
        token_dim: int = 128,
        dropout: float = 0.1,
        attn_dropout: float = 0.25,
        mean_skip: bool = False,
    ):
        super().__init__()
        self.n_heads, self.head_dim, self.embed_dim = n_heads, head_dim, embed_dim
        self.pre = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_heads * head_dim),
        )
        self.heads = nn.ModuleList(
            [GatedAttentionHead(head_dim, attn_hidden, attn_dropout) for _ in range(n_heads)]
        )
        self.slide_proj = nn.Linear(n_heads * head_dim, embed_dim)
        self.token_proj = nn.Linear(n_heads * head_dim, token_dim)
        self.skip = nn.Linear(in_dim, embed_dim) if mean_skip else None

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.pre(x)  # [B,N,H*a]
        slide, attn = self.pool(h, mask, x)
        return slide, self.token_proj(h), attn

    def pool(
        self, h: torch.Tensor, mask: torch.Tensor | None = None, x: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(slide [B,E], attn [B,N]) from the pre-MLP's output `h` [B,N,H*a]; `x` is the input
        the mean skip reads (required when `mean_skip`)."""
        B, N, _ = h.shape
        hh = h.view(B, N, self.n_heads, self.head_dim)
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=h.device)
        # rows with no valid token: attend uniformly to avoid NaN (caller masks them out)
        safe = mask | (~mask.any(dim=1, keepdim=True))
        pooled, attns = [], []
        for i, head in enumerate(self.heads):
            s = head(hh[:, :, i]).float().masked_fill(~safe, float("-inf"))
            a = torch.softmax(s, dim=1)  # [B,N]
            attns.append(a)
            pooled.append(torch.einsum("bn,bnd->bd", a.to(hh.dtype), hh[:, :, i]))
        z = torch.cat(pooled, dim=-1)
        attn = torch.stack(attns, 0).mean(0) * mask
        slide = self.slide_proj(z)
        if self.skip is not None:
            m = mask.to(x.dtype)[..., None]
            slide = slide + self.skip((x * m).sum(1) / m.sum(1).clamp_min(1.0))
        return slide, attn


@register_model("gated_abmil")
def gated_abmil(**cfg) -> GatedABMIL:
    return GatedABMIL(**cfg)
