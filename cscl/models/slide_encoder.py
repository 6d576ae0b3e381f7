"""CSCL stage-2 slide encoder: [stain embedding] → cross-stain fusion → gated ABMIL per stain.

Input tokens are location-aligned across stains: `x[b, s, p]` is the (adapted) feature of stain
`s` at the tissue location of H&E token `p` of case `b`; `valid[b, s, p]` says whether that stain
has a token there. Stain slot 0 is always H&E. Output: one slide embedding per (case, stain).

Stain codes: `stain_codes(B, S, P)` gives the code of every token in batch-major order
(b, s, p) — the layout of `x.reshape(-1, D)` — fixing reference defect 3 (codes were built
modality-major while features were batch-major). `stain_ids[s]` maps slot → vocabulary index so a
model trained on HE+4 IHC can encode HE alone with the right code.

H&E-only inference runs the same fusion module with S=1 (see `cscl.models.fusion`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cscl.models.abmil import GatedABMIL
from cscl.models.fusion import CrossStainFusion
from cscl.models.registry import register_model


def stain_codes(B: int, S: int, P: int, stain_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Stain vocabulary index of every token of a [B,S,P] block, flattened batch-major."""
    ids = torch.arange(S) if stain_ids is None else stain_ids.to("cpu")
    return ids.view(1, S, 1).expand(B, S, P).reshape(-1)


class SlideEncoder(nn.Module):
    """`forward(x [B,S,P,D], valid [B,S,P], stain_ids [S]) -> dict(slide [B,S,E], tokens, attn)`."""

    def __init__(
        self,
        in_dim: int,
        n_stains: int = 5,
        stain_embed_dim: int = 32,
        use_stain_embed: bool = True,
        use_fusion: bool = True,
        fusion_heads: int = 8,
        abmil: dict | None = None,
    ):
        super().__init__()
        self.in_dim, self.n_stains = in_dim, n_stains
        self.use_stain_embed, self.use_fusion = use_stain_embed, use_fusion
        dim = in_dim + (stain_embed_dim if use_stain_embed else 0)
        self.stain_embed = nn.Embedding(n_stains, stain_embed_dim) if use_stain_embed else None
        self.fusion = CrossStainFusion(dim, fusion_heads) if use_fusion else None
        self.abmil = GatedABMIL(dim, **(abmil or {}))
        self.embed_dim = self.abmil.embed_dim

    def tokens_in(self, x: torch.Tensor, stain_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Concatenate stain codes (batch-major, see `stain_codes`) to the tokens."""
        if self.stain_embed is None:
            return x
        B, S, P, _ = x.shape
        codes = stain_codes(B, S, P, stain_ids).to(x.device)
        e = self.stain_embed(codes).view(B, S, P, -1).to(x.dtype)
        return torch.cat([x, e], dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        stain_ids: torch.Tensor | None = None,
        fusion_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`fusion_valid` (default `valid`) masks keys in fusion only: stain dropout uses it."""
        B, S, P, _ = x.shape
        if valid is None:
            valid = torch.ones(B, S, P, dtype=torch.bool, device=x.device)
        h = self.tokens_in(x, stain_ids)
        if self.fusion is not None:
            h = self.fusion(h, valid if fusion_valid is None else fusion_valid)
        slide, tokens, attn = self.abmil(h.reshape(B * S, P, -1), valid.reshape(B * S, P))
        return {
            "slide": slide.view(B, S, -1),
            "tokens": tokens.view(B, S, P, -1),
            "attn": attn.view(B, S, P),
        }

    def encode_he(self, x: torch.Tensor, mask: torch.Tensor | None = None, he_id: int = 0):
        """H&E-only path (inference): x [B,P,D] → (slide [B,E], attn [B,P])."""
        if self._foldable():
            return self._encode_he_folded(x, mask, he_id)
        valid = None if mask is None else mask[:, None]
        out = self.forward(x[:, None], valid, torch.tensor([he_id]))
        return out["slide"][:, 0], out["attn"][:, 0]

    def _foldable(self) -> bool:
        """Inference (eval mode, no autograd) with single-stain fusion feeding a linear layer."""
        return (
            not self.training
            and not torch.is_grad_enabled()
            and self.fusion is not None
            and self.fusion.single_key_is_exact()
            and self.abmil.skip is None
            and isinstance(self.abmil.pre[0], nn.Linear)
        )

    def _encode_he_folded(self, x: torch.Tensor, mask: torch.Tensor | None, he_id: int):
        """`encode_he` with single-stain fusion folded into ABMIL's first linear layer.

        With one stain, fusion is h + norm(h) @ W.T + b (`single_stain_affine`), and the next
        layer is linear, so pre[0](fusion(h)) = [h, norm(h)] @ [W1, W1·W].T + (W1·b + b1): one
        (P × 2D) @ (2D × hidden) product instead of two D × D maps and a D × hidden one (the
        serving model spent most of its time in those). Same output up to float rounding
        (tested); the folded weights are rebuilt whenever a parameter changes.
        """
        h = self.tokens_in(x[:, None], torch.tensor([he_id]))[:, 0]
        w, b = self._folded_first_layer()
        z = self.abmil.pre[1:](F.linear(torch.cat([h, self.fusion.norm(h)], dim=-1), w, b))
        return self.abmil.pool(z, mask)

    def _folded_first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        lin = self.abmil.pre[0]
        params = [lin.weight, lin.bias, *self.fusion.parameters()]
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params if p is not None)
        cached = self.__dict__.get("_fold")
        if cached is None or cached[0] != key:
            w, b = self.fusion.single_stain_affine()
            w1 = lin.weight.double()
            b1 = lin.bias.double() if lin.bias is not None else 0.0
            dtype = lin.weight.dtype
            cached = (key, torch.cat([w1, w1 @ w], dim=1).to(dtype), (w1 @ b + b1).to(dtype))
            self.__dict__["_fold"] = cached  # not a parameter or buffer: never saved
        return cached[1], cached[2]


@register_model("slide_encoder")
def slide_encoder(**cfg) -> SlideEncoder:
    return SlideEncoder(**cfg)
