"""Losses of CSCL, MADELEINE and HistoStainAlign.

- `patch_nce`: patch InfoNCE, H&E tokens query, the IHC token at the same location is the
  positive, every other IHC token of the batch a negative. Features are L2-normalised before the
  dot product (fix of reference defect 2: raw dot products of post-ReLU features are not
  scale-invariant and saturate).
- `symmetric_infonce`: CLIP loss between H&E and IHC slide embeddings; cases missing the stain
  are masked out entirely (they are neither positives nor negatives).
- `got_loss`: optimal-transport token loss (entropic OT, log-domain Sinkhorn, cosine cost)
  between the token embeddings of the two slides of a case. Up to `n_tokens` TOKENS per slide
  are subsampled (fix of reference defect 4, which subsampled `batch_size` tokens).
- `masked_view_mse`: HistoStainAlign intra-modal loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def patch_nce(
    q: torch.Tensor, k: torch.Tensor, temperature: float = 0.07, normalize: bool = True
) -> torch.Tensor:
    """q, k: [n, D] with q[i] ↔ k[i] positive pairs. Mean cross-entropy over the n queries."""
    if q.shape[0] == 0:
        return q.sum() * 0.0
    q, k = q.float(), k.float()
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    logits = q @ k.t() / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


def symmetric_infonce(
    a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 0.001
) -> torch.Tensor:
    """a, b: [B, E] slide embeddings; mask [B] bool = case has both. < 2 valid cases → 0."""
    if mask is not None:
        a, b = a[mask], b[mask]
    if a.shape[0] < 2:
        return (a.sum() + b.sum()) * 0.0
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.t() / temperature
    t = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t))


def subsample_tokens(
    mask: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of up to `n` valid tokens of one slide (mask [N] bool), random without replacement."""
    idx = torch.nonzero(mask, as_tuple=False).squeeze(1)
    if idx.numel() <= n:
        return idx
    perm = torch.randperm(idx.numel(), generator=generator, device="cpu").to(idx.device)
    return idx[perm[:n]]


def sinkhorn(cost: torch.Tensor, eps: float = 0.05, iters: int = 50) -> torch.Tensor:
    """Entropic OT plan with uniform marginals (log-domain, stable): cost [n, m] → plan [n, m]."""
    n, m = cost.shape
    log_a = torch.full((n,), -math.log(n), device=cost.device)
    log_b = torch.full((m,), -math.log(m), device=cost.device)
    K = -cost / eps
    u = torch.zeros(n, device=cost.device)
    v = torch.zeros(m, device=cost.device)
    for _ in range(iters):
        u = log_a - torch.logsumexp(K + v[None, :], dim=1)
        v = log_b - torch.logsumexp(K + u[:, None], dim=0)
    return torch.exp(K + u[:, None] + v[None, :])


def got_loss(
    x: torch.Tensor,
    x_mask: torch.Tensor,
    y: torch.Tensor,
    y_mask: torch.Tensor,
    pair_mask: torch.Tensor | None = None,
    n_tokens: int = 256,
    eps: float = 0.05,
    iters: int = 50,
    generator: torch.Generator | None = None,
    return_plans: bool = False,
):
    """OT distance between token sets of each case: x, y [B, N, T]; masks [B, N] valid tokens.

    `pair_mask` [B]: cases that have both slides. The plan is computed without gradient (as in
    IPOT/GOT); the loss <plan, cost> back-propagates through the cosine cost.
    """
    B = x.shape[0]
    losses, plans = [], []
    for bi in range(B):
        if pair_mask is not None and not bool(pair_mask[bi]):
            continue
        ix = subsample_tokens(x_mask[bi], n_tokens, generator)
        iy = subsample_tokens(y_mask[bi], n_tokens, generator)
        if ix.numel() == 0 or iy.numel() == 0:
            continue
        xs = F.normalize(x[bi, ix].float(), dim=-1)
        ys = F.normalize(y[bi, iy].float(), dim=-1)
        cost = 1.0 - xs @ ys.t()
        with torch.no_grad():
            plan = sinkhorn(cost.detach(), eps, iters)
        losses.append((plan * cost).sum())
        plans.append(plan)
    loss = torch.stack(losses).mean() if losses else (x.sum() + y.sum()) * 0.0
    return (loss, plans) if return_plans else loss


def random_token_mask(
    mask: torch.Tensor, frac: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Drop `frac` of the valid tokens of each row (at least one kept): the masked view."""
    r = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device)
    keep = mask & (r >= frac)
    empty = ~keep.any(dim=1) & mask.any(dim=1)
    if empty.any():  # keep the first valid token of rows that lost all of them
        first = mask.float().argmax(dim=1)
        keep[empty, first[empty]] = True
    return keep


def masked_view_mse(z_full: torch.Tensor, z_masked: torch.Tensor) -> torch.Tensor:
    """HistoStainAlign intra loss: embedding of a slide vs that of its 50 %-masked view."""
    return F.mse_loss(z_masked.float(), z_full.float())
