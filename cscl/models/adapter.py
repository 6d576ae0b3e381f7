"""Stage-1 patch-feature adapter (CLIP-Adapter style), one per magnification scale.

Per scale: Linear(D→D/r) → ReLU → Linear(D/r→D) → ReLU, shared by all stains (METHOD.md §1).
`residual=True` gives the CLIP-Adapter blend `x + α·adapter(x)` (α = 0.2), which keeps the frozen
foundation-model feature and only nudges it; the plain form replaces the feature.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cscl.models.registry import register_model


class Adapter(nn.Module):
    """Bottleneck MLP adapter for one scale."""

    def __init__(self, dim: int, reduction: int = 4, residual: bool = False, alpha: float = 0.2):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.ReLU()
        )
        self.residual = residual
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return x + self.alpha * y if self.residual else y


class PatchAdapter(nn.Module):
    """One `Adapter` per scale (`"10x"`, optionally `"5x"`); `forward(x, scale)`."""

    def __init__(
        self,
        dim: int,
        scales: tuple[str, ...] | list[str] = ("10x",),
        reduction: int = 4,
        residual: bool = False,
        alpha: float = 0.2,
    ):
        super().__init__()
        self.dim = dim
        self.scales = tuple(scales)
        self.adapters = nn.ModuleDict(
            {s: Adapter(dim, reduction, residual, alpha) for s in self.scales}
        )

    def forward(self, x: torch.Tensor, scale: str = "10x") -> torch.Tensor:
        return self.adapters[scale](x)


@register_model("patch_adapter")
def patch_adapter(**cfg) -> PatchAdapter:
    return PatchAdapter(**cfg)
