"""Supervised ABMIL baseline (`supervised`): gated ABMIL on H&E trained with cross-entropy on one
label task; checkpoint = lowest held-out CE.

The slide embedding (pre-head, E-dim) is what `cscl embed` writes, so the few-shot probe compares
it with the self-supervised embeddings on equal terms.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from cscl.io.manifest import HE
from cscl.train.objective import TrainInputs
from cscl.train.registry import register_objective
from cscl.train.stage2 import LabelledSlideObjective, SlideConfig, SlideData


@register_objective("supervised")
class SupervisedObjective(LabelledSlideObjective):
    DEFAULTS: ClassVar[dict[str, Any]] = dict(
        fusion=False, stain_embed=False, pairing="random", got_weight=0.0
    )

    def __init__(self, config: SlideConfig, inputs: TrainInputs):
        super().__init__(replace(config, fusion=False, stain_embed=False), inputs)

    def setup(self, device: torch.device) -> None:
        self.device = device
        self.load_adapter(device)
        self.data = SlideData(self.inputs.cohort, self.adapter, [HE], aligned=False)
        self.build_encoder(1, device)
        self.setup_labels()

    def n_items(self) -> int:
        return len(self.train_idx)

    def loss(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        idx = [self.train_idx[i] for i in idx]
        x, valid, _ = self.data.batch(idx, self.config.n_tokens, g)
        z, _ = self.encoder.encode_he(x[:, 0].to(self.device), valid[:, 0].to(self.device))
        return F.cross_entropy(self.head(z).float(), self.y[idx].to(self.device))
