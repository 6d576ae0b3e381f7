"""Learning-rate schedule: linear warm-up then cosine decay to `min_lr` (per optimiser step)."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(
    step: int, total: int, warmup: int, base_lr: float, min_lr: float
) -> float:
    """Multiplier of `base_lr` at `step` (0-based) of `total` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    lr = min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))
    return lr / base_lr if base_lr > 0 else 0.0


def warmup_cosine(
    opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr: float = 1e-8
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over the optimiser's (first group's) base lr."""
    base = opt.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine_factor(s, total_steps, warmup_steps, base, min_lr)
    )
