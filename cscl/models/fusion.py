"""Cross-stain attention fusion: tokens of the same tissue location attend across stains.

[B,S,P,D] → [B·P,S,D], multi-head self-attention over the S stains (8 heads), residual add.
Missing stains / unmatched locations are keys masked with `key_padding_mask`.

H&E-only inference (fix of reference defect 5): the reference runs fusion in training but skips
it at inference, so H&E tokens at test time are out of distribution. Here the SAME module is run
at inference with H&E as the only stain (S=1: each H&E token attends to itself). Training uses
stain dropout (IHC stains randomly masked as keys, including all of them at once), so an H&E
token that sees only itself is an input the encoder was trained on. Running it with only
the H&E slot valid gives the same output as running it on H&E alone (tested).

With one stain (S=1, every served request) each token's only key is itself: the softmax over one
key is 1, so attention reduces to out_proj(v_proj(norm(x))) — two linear maps, computed as such
(about two thirds of the serving model's time went into MultiheadAttention's general path).
Identical output up to float rounding (tested to 1e-6); not taken when attention dropout is
active in training, which would drop that single weight.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cscl.models.registry import register_model


def _heads_for(dim: int, wanted: int) -> int:
    """Largest head count ≤ wanted that divides dim (attention needs dim % heads == 0)."""
    for h in range(min(wanted, dim), 0, -1):
        if dim % h == 0:
            return h
    return 1


class CrossStainFusion(nn.Module):
    """`forward(x [B,S,P,D], valid [B,S,P] bool) -> [B,S,P,D]` (residual attention across S)."""

    def __init__(self, dim: int, n_heads: int = 8, dropout: float = 0.0):
        super().__init__()
        self.n_heads = _heads_for(dim, n_heads)
        self.attn = nn.MultiheadAttention(dim, self.n_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] == 1 and self.single_key_is_exact():
            return x + self._value_of_self(self.norm(x))
        return self.attend(x, valid)

    def single_key_is_exact(self) -> bool:
        a = self.attn
        return a.bias_k is None and not a.add_zero_attn and not (self.training and a.dropout > 0)

    def _value_of_self(self, q: torch.Tensor) -> torch.Tensor:
        """Attention output when the only key is the query's own token: out_proj(v_proj(q))."""
        w_v, b_v = self.value_projection()
        return self.attn.out_proj(F.linear(q, w_v, b_v))

    def value_projection(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) of the attention's value projection."""
        a, D = self.attn, self.norm.normalized_shape[0]
        w_v = a.in_proj_weight[2 * D :] if a._qkv_same_embed_dim else a.v_proj_weight
        b_v = a.in_proj_bias[2 * D :] if a.in_proj_bias is not None else None
        return w_v, b_v

    def single_stain_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) with single-stain fusion = x + norm(x) @ W.T + b (out_proj ∘ v_proj, folded)."""
        w_v, b_v = self.value_projection()
        w_o, b_o = self.attn.out_proj.weight, self.attn.out_proj.bias
        w = w_o.double() @ w_v.double()
        b = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
        if b_v is not None:
            b = b + w_o.double() @ b_v.double()
        if b_o is not None:
            b = b + b_o.double()
        return w, b

    def attend(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The general path: multi-head attention across the S stains of each location."""
        B, S, P, D = x.shape
        if valid is None:
            valid = torch.ones(B, S, P, dtype=torch.bool, device=x.device)
        t = x.permute(0, 2, 1, 3).reshape(B * P, S, D)
        kpm = ~valid.permute(0, 2, 1).reshape(B * P, S)
        # a location with no valid stain at all (padding): let it attend to itself, harmless
        kpm = kpm & kpm.logical_not().any(dim=1, keepdim=True)
        q = self.norm(t)
        out, _ = self.attn(q, q, q, key_padding_mask=kpm, need_weights=False)
        out = t + out
        return out.reshape(B, P, S, D).permute(0, 2, 1, 3)


@register_model("cross_stain_fusion")
def cross_stain_fusion(**cfg) -> CrossStainFusion:
    return CrossStainFusion(**cfg)
