"""CSCL stage 2 (`cscl`): cross-stain slide encoder on the frozen stage-1 adapter.

Location-aligned tokens → stain code → cross-stain fusion → gated ABMIL per stain → symmetric
InfoNCE between the H&E and each IHC slide embedding (+ GOT), see `cscl.train.stage2`. Label-free
checkpoint selection: highest RankMe of the training H&E embeddings after `rankme_after` epochs.
Logged per epoch beside RankMe: H&E→IHC retrieval top-1 on training cases and on the
`monitor_frac` held-out cases (`retrieval_train`, `retrieval_heldout`; chance = 1 / cases).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cscl.errors import InputError
from cscl.train.fit import Selection
from cscl.train.registry import register_objective
from cscl.train.stage2 import (
    SlideData,
    SlideObjective,
    alignment_loss,
    cross_stain_retrieval,
    monitor_split,
    slide_outputs,
)


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
        self.train_idx, self.monitor_idx = monitor_split(len(self.data), cfg.monitor_frac, cfg.seed)
        # as many training cases as held-out ones (16 without a hold-out): one chance level
        self.train_probe = self.train_idx[: len(self.monitor_idx) or 16]

    def n_items(self) -> int:
        return len(self.train_idx)

    def loss(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        idx = [self.train_idx[i] for i in idx]
        x, valid, present = self.data.batch(idx, self.config.n_tokens, g)
        x, valid, present = x.to(self.device), valid.to(self.device), present.to(self.device)
        out = slide_outputs(self.encoder, x, valid, self.config, g)
        return alignment_loss(out, valid, present, self.config, g)

    def selection(self) -> Selection:
        return Selection("rankme", "max", after=self.config.rankme_after)

    def epoch_metrics(self) -> dict[str, Any]:
        cfg, dev = self.config, self.device
        out: dict[str, Any] = self.rankme()
        out["retrieval_train"] = cross_stain_retrieval(self.encoder, self.data, self.train_probe,
                                                       cfg, dev)  # fmt: skip
        if self.monitor_idx:
            out["retrieval_heldout"] = cross_stain_retrieval(self.encoder, self.data,
                                                             self.monitor_idx, cfg, dev)  # fmt: skip
        return out

    def run_config(self) -> dict[str, Any]:
        held = [self.data.case_ids[i] for i in self.monitor_idx]
        return {**super().run_config(), "monitor": {"cases": held}}
