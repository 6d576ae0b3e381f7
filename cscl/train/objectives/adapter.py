"""Stage 1 (`adapter`): the patch adapter, trained with patch-wise cross-stain contrastive alignment.

For each IHC stain, H&E tokens (queries) are matched to the IHC token of the SAME tissue
location (positive; `pairing="location"` via the registration, or `"identity"` for slides that
already share coordinates); every other IHC token of the batch is a negative. Loss per stain:
`nce_weight` × patch InfoNCE (L2-normalised, T=0.07) + `got_weight` × OT token loss.
`pairing="random"` reproduces the reference bug (independently sampled patches paired by index).
Optional 5x scale: each 5x token is the mean of the (up to) 2×2 10x tokens it covers; it has its
own adapter and its own location pairs. Checkpoint: the last epoch (fixed schedule, as the paper).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from cscl.data import CohortFeatures, SlideTokens
from cscl.errors import InputError
from cscl.models import create_model
from cscl.models.losses import got_loss, patch_nce
from cscl.train.fit import FitConfig
from cscl.train.objective import Objective
from cscl.train.registry import register_objective


@dataclass(frozen=True)
class AdapterConfig(FitConfig):
    pairs_per_case: int = 256  # token pairs per case and stain per step
    temperature: float = 0.07
    nce_weight: float = 10.0
    got_weight: float = 0.0  # the paper's 1.0 is the "paper" preset (METHOD-NOTES: GOT)
    got_tokens: int = 256
    pairing: str = "location"  # location | identity | random
    max_dist_frac: float = 0.75
    scales: tuple[str, ...] = ("10x",)
    reduction: int = 4
    # x + α·adapter(x): the plain adapter (final ReLU through a D/4 bottleneck) throws the
    # marker signal away and stage 2 on it collapses (issue 10); "paper" preset: False
    residual: bool = True
    alpha: float = 0.2


@register_objective("adapter")
class AdapterObjective(Objective):
    Config: ClassVar[type[FitConfig]] = AdapterConfig
    stage: ClassVar[str] = "adapter"
    adapter_use: ClassVar[str] = "never"  # it trains one
    config: AdapterConfig

    @property
    def description(self) -> str:
        return "stage 1 adapter"

    def setup(self, device: torch.device) -> None:
        cfg, cohort = self.config, self.inputs.cohort
        self.device = device
        self.data = _scale_pairs(cohort, self.inputs.registrations, cfg)
        if not self.data[cfg.scales[0]]:
            raise InputError(
                "no case has an IHC slide with usable pairs; stage 1 needs paired H&E/IHC slides",
                hint="check the manifest's IHC rows and the registration table (ok column)",
            )
        self.model_config = dict(dim=cohort.dim, scales=list(cfg.scales), reduction=cfg.reduction,
                                 residual=cfg.residual, alpha=cfg.alpha)  # fmt: skip
        self.adapter = create_model("patch_adapter", **self.model_config).to(device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"adapter": self.adapter}

    def n_items(self) -> int:
        return len(self.data[self.config.scales[0]])

    def loss(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        loss = torch.zeros((), device=self.device)
        for scale in self.config.scales:
            loss = loss + _batch_loss(self.adapter, self.data[scale], idx, scale, self.config, g,
                                      self.device)  # fmt: skip
        return loss

    def run_config(self) -> dict[str, Any]:
        cohort = self.inputs.cohort
        return {
            "kind": "adapter",
            "stage": "adapter",
            "objective": "cscl",
            "input_dim": cohort.dim,
            "stains": cohort.stains,
            "he_id": 0,
            "adapter": {"name": "patch_adapter", "config": self.model_config},
        }

    def data_info(self) -> dict[str, Any]:
        return {"n_cases_with_pairs": self.n_items()}


def pool_5x(sl: SlideTokens) -> SlideTokens:
    """5x tokens: mean of the 10x tokens falling in each 2×2 cell (level-0 grid of 2·patch)."""
    ps = sl.patch_size_level0
    cell = np.floor(sl.coords / (2 * ps)).astype(np.int64)
    keys, inv = np.unique(cell, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    feats = np.zeros((len(keys), sl.features.shape[1]), dtype=np.float32)
    np.add.at(feats, inv, sl.features.astype(np.float32))
    feats /= np.bincount(inv, minlength=len(keys))[:, None]
    return SlideTokens(sl.slide_id, sl.stain, feats, keys * int(2 * ps), 2 * ps)


def _scale_pairs(cohort: CohortFeatures, registrations, cfg: AdapterConfig) -> dict:
    """{scale: list over cases of (he_feats, {stain: (ihc_feats, he_idx, ihc_idx)})}."""
    out = {}
    for scale in cfg.scales:
        if scale == "10x":
            coh = cohort
        elif scale == "5x":
            coh = copy.copy(cohort)
            coh.cases = [copy.copy(c) for c in cohort.cases]
            for c in coh.cases:
                c.he = pool_5x(c.he)
                c.ihc = {s: pool_5x(t) for s, t in c.ihc.items()}
        else:
            raise InputError(f"unknown scale {scale!r}", hint="use 10x and/or 5x")
        if cfg.pairing in ("location", "identity"):
            coh.attach_pairs(registrations, cfg.pairing, cfg.max_dist_frac)
        items = []
        for c in coh.cases:
            he = torch.from_numpy(c.he.features.astype(np.float32))
            st = {}
            for s, t in c.ihc.items():
                f = torch.from_numpy(t.features.astype(np.float32))
                if cfg.pairing == "random":
                    st[s] = (f, None, None)
                elif s in c.pairs:
                    hi, ii = c.pairs[s]
                    st[s] = (f, torch.from_numpy(hi), torch.from_numpy(ii))
            if st:
                items.append((he, st))
        out[scale] = items
    return out


def _sample_pairs(he, ihc, hi, ii, m: int, g: torch.Generator):
    """Indices of up to m (H&E, IHC) token pairs of one case/stain."""
    if hi is None:  # reference behaviour: independent samples paired by index
        n = min(m, he.shape[0], ihc.shape[0])
        a = torch.randperm(he.shape[0], generator=g)[:n]
        b = torch.randperm(ihc.shape[0], generator=g)[:n]
        return a, b
    sel = torch.randperm(hi.numel(), generator=g)[:m]
    return hi[sel], ii[sel]


def _batch_loss(adapter, items, idx, scale, cfg: AdapterConfig, g, dev) -> torch.Tensor:
    per_stain: dict[str, list] = {}
    for i in idx:
        if i >= len(items):
            continue
        he, st = items[i]
        for s, (f, hi, ii) in st.items():
            a, b = _sample_pairs(he, f, hi, ii, cfg.pairs_per_case, g)
            if a.numel():
                per_stain.setdefault(s, []).append((he[a], f[b]))
    loss = torch.zeros((), device=dev)
    for pairs in per_stain.values():
        q = adapter(torch.cat([p[0] for p in pairs]).to(dev), scale)
        k = adapter(torch.cat([p[1] for p in pairs]).to(dev), scale)
        loss = loss + cfg.nce_weight * patch_nce(q, k, cfg.temperature)
        if cfg.got_weight > 0:  # OT between the sampled H&E and IHC tokens of each case
            sizes = [len(p[0]) for p in pairs]
            n = max(sizes)
            qs = q.new_zeros(len(sizes), n, q.shape[1])
            ks = k.new_zeros(len(sizes), n, k.shape[1])
            msk = torch.zeros(len(sizes), n, dtype=torch.bool, device=dev)
            off = 0
            for j, sz in enumerate(sizes):
                qs[j, :sz], ks[j, :sz], msk[j, :sz] = q[off : off + sz], k[off : off + sz], True
                off += sz
            gl = got_loss(qs, msk, ks, msk, n_tokens=cfg.got_tokens, generator=g)
            loss = loss + cfg.got_weight * gl
    return loss / max(1, len(per_stain))
