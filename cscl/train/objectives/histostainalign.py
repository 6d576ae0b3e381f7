"""HistoStainAlign objective (`histostainalign`, arXiv 2506.15853): one slide encoder shared by H&E
and the IHC stain of the label task.

Loss per batch, equal weights: intra = MSE(H&E embedding, embedding of the same H&E with
`mask_frac` = 50 % of its tokens masked); inter = symmetric InfoNCE (T=0.01) between L2-normalised
H&E and IHC slide embeddings (missing IHC masked); CE of the status head on the H&E embedding
(cases without a label, and the held-out validation cases, masked). Checkpoint: lowest held-out
CE. `TrainedModel.predict_status` gives probabilities from H&E. Tokens are the stage-1 adapted
features when an adapter run is given, else raw features.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from cscl.errors import InputError
from cscl.io.manifest import HE
from cscl.models.losses import masked_view_mse, random_token_mask, symmetric_infonce
from cscl.train.labels import TASK_STAIN
from cscl.train.objective import TrainInputs
from cscl.train.registry import register_objective
from cscl.train.stage2 import LabelledSlideObjective, SlideConfig, SlideData


@register_objective("histostainalign")
class HistoStainAlignObjective(LabelledSlideObjective):
    DEFAULTS: ClassVar[dict[str, Any]] = dict(
        fusion=False, stain_embed=False, pairing="random", temperature=0.01, lr=5e-5,
        min_lr=5e-7, warmup_epochs=2, epochs=30, batch_size=8, n_tokens=4096, got_weight=0.0,
    )  # fmt: skip

    def __init__(self, config: SlideConfig, inputs: TrainInputs):
        # one shared encoder without fusion or stain code, whatever was asked
        super().__init__(replace(config, fusion=False, stain_embed=False), inputs)
        self.stain = (config.ihc_stain or TASK_STAIN.get(config.label_task or "", "")).upper()
        if self.stain not in inputs.cohort.stains:
            raise InputError(
                f"HistoStainAlign aligns H&E with one IHC stain; {self.stain or '(none)'} is not "
                f"in the cohort (stains {inputs.cohort.stains})",
                hint="pass --ihc-stain with one of the cohort's IHC stains",
            )

    def setup(self, device: torch.device) -> None:
        self.device = device
        self.load_adapter(device)
        self.data = SlideData(self.inputs.cohort, self.adapter, [HE, self.stain], aligned=False)
        self.build_encoder(2, device)
        self.setup_labels()

    def loss(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        cfg, enc, dev = self.config, self.encoder, self.device
        x, valid, present = self.data.batch(idx, cfg.n_tokens, g)
        x, valid, present = x.to(dev), valid.to(dev), present.to(dev)
        B, S, P, D = x.shape
        z, _, _ = enc.abmil(x.reshape(B * S, P, D), valid.reshape(B * S, P))
        z = z.view(B, S, -1)
        masked = random_token_mask(valid[:, 0], cfg.mask_frac, g)
        zm, _, _ = enc.abmil(x[:, 0], masked)
        intra = masked_view_mse(z[:, 0], zm)
        inter = symmetric_infonce(z[:, 0], z[:, 1], present[:, 1], cfg.temperature)
        y = self.y_train[idx].to(dev)
        lab = y >= 0
        logits = self.head(z[:, 0])
        ce = F.cross_entropy(logits[lab].float(), y[lab]) if lab.any() else logits.sum() * 0
        return intra + inter + ce
