"""HistoStainAlign status head: Linear(E→256)-ReLU-Drop(0.5)-Linear(256→C) on the H&E embedding."""

from __future__ import annotations

import torch
import torch.nn as nn

from cscl.models.registry import register_model


class StatusHead(nn.Module):
    """Predicts an IHC status (e.g. ER positive/negative) from an H&E slide embedding."""

    def __init__(self, in_dim: int, n_classes: int = 2, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @torch.no_grad()
    def predict_proba(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(z).float(), dim=-1)


@register_model("status_head")
def status_head(**cfg) -> StatusHead:
    return StatusHead(**cfg)
