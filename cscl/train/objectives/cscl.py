"""CSCL stage 2 (`cscl`): cross-stain slide encoder on the frozen stage-1 adapter.

Location-aligned tokens → stain code → cross-stain fusion → gated ABMIL per stain → symmetric
InfoNCE between the H&E and each IHC slide embedding (+ GOT), see `cscl.train.stage2`. Label-free
checkpoint selection: highest RankMe of the training H&E embeddings after `rankme_after` epochs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cscl.errors import InputError
from cscl.train.fit import Selection
from cscl.train.registry import register_objective
from cscl.train.stage2 import SlideData, SlideObjective, alignment_loss, slide_outputs


@register_objective("cscl")
class CsclObjective(SlideObjective):
    adapter_use: ClassVar[str] = "expected"

    def setup(self, device: torch.device) -> None:
        cfg, cohort = self.config, self.inputs.cohort
        self.device = device
        self.load_adapter(device)
        aligned = cfg.fusion and cfg.pairing in ("location", "identity")
        if aligned:
            cohort.attach_pairs(self.inputs.registrations, cfg.pairing, cfg.max_dist_frac)
        self.data = SlideData(cohort, self.adapter, cohort.stains, aligned)
        if len(cohort.stains) < 2:
            raise InputError(
                "stage 2 alignment needs IHC slides; the cohort has only H&E",
                hint="add IHC rows to the manifest, or use --objective supervised",
            )
        self.build_encoder(len(cohort.stains), device)

    def loss(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        x, valid, present = self.data.batch(idx, self.config.n_tokens, g)
        x, valid, present = x.to(self.device), valid.to(self.device), present.to(self.device)
        out = slide_outputs(self.encoder, x, valid, self.config, g)
        return alignment_loss(out, valid, present, self.config, g)

    def selection(self) -> Selection:
        return Selection("rankme", "max", after=self.config.rankme_after)

    def epoch_metrics(self) -> dict[str, Any]:
        return self.rankme()
