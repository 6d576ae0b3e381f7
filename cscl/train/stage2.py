"""Stage 2 building blocks shared by the slide-level objectives (cscl.train.objectives).

CSCL: frozen stage-1 adapter → location-aligned tokens [B,S,P,D] (IHC token p = the IHC patch
registered to H&E patch p) → stain code → cross-stain fusion → gated ABMIL per stain → symmetric
InfoNCE (T=0.07; the paper's 0.001 is the "paper" preset) between H&E and each IHC slide
embedding, masked for missing stains, + `got_weight` × OT loss on token embeddings (default 0:
GOT with a cosine cost and uniform weights is minimised by making every token identical, see
docs/METHOD-NOTES.md). Losses are averaged over the IHC stains present. `monitor_frac` of the
cases are held out of training to log cross-stain retrieval on unseen cases each epoch
(memorisation shows as a train/held-out gap).
Default `he_query_branch="alone"` (`slide_outputs`): the H&E embedding in the loss is computed
from H&E tokens alone — the inference computation — and IHC embeddings from IHC stains alone, so
fusion cannot hand the co-located IHC token to the H&E query (the shortcut found by the planted-
signal benchmark). `"fused"` reproduces the old single pass (fusion over all stains, with stain
dropout: each IHC stain hidden with prob `stain_dropout`, all with prob `drop_all_ihc`).
Here: `SlideConfig`, `SlideData` (adapted tokens + batches), the encoder, the alignment loss,
RankMe/validation metrics, and the base classes `SlideObjective` / `LabelledSlideObjective`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from cscl.data import CohortFeatures
from cscl.errors import InputError
from cscl.models import create_model
from cscl.models.losses import got_loss, symmetric_infonce
from cscl.train.checkpoint import load_adapter
from cscl.train.fit import FitConfig, Selection
from cscl.train.labels import case_labels, holdout_split
from cscl.train.objective import Objective
from cscl.train.rankme import smooth_rank


@dataclass(frozen=True)
class SlideConfig(FitConfig):
    """Stage-2 settings (all slide-level objectives); objectives replace their DEFAULTS over it."""

    objective: str = "cscl"
    batch_size: int = 24
    n_tokens: int = 2048
    temperature: float = 0.07
    got_weight: float = 0.0
    got_tokens: int = 256
    pairing: str = "location"  # location | identity | random
    max_dist_frac: float = 0.75
    stain_embed: bool = True
    stain_embed_dim: int = 32
    fusion: bool = True
    fusion_heads: int = 8
    # "alone": the H&E embedding in the loss is the inference computation (fusion over H&E only)
    # and IHC embeddings fuse IHC stains only; "fused": the old shortcut-prone path (see notes)
    he_query_branch: str = "alone"
    stain_dropout: float = 0.5
    drop_all_ihc: float = 0.25
    abmil: dict = field(default_factory=dict)  # GatedABMIL kwargs; {} = paper sizes
    rankme_after: int = 20
    label_task: str | None = None
    ihc_stain: str | None = None  # HistoStainAlign: IHC stain to align (default from label)
    mask_frac: float = 0.5  # HistoStainAlign masked view
    val_frac: float = 0.2  # labelled objectives: held-out cases for checkpoint selection
    monitor_frac: float = 0.1  # contrastive objectives: cases held out to log retrieval


def monitor_split(n: int, frac: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, held-out) case indices; no hold-out when it would have fewer than 4 cases (a
    retrieval among 3 says nothing) — tiny cohorts then train on everything."""
    k = int(round(frac * n))
    if k < 4 or n - k < 2:
        return list(range(n)), []
    perm = np.random.default_rng([seed, 7]).permutation(n)
    return sorted(perm[k:].tolist()), sorted(perm[:k].tolist())


@torch.no_grad()
def cross_stain_retrieval(enc, data: SlideData, idx: list[int], cfg: SlideConfig,
                          dev: torch.device) -> float | None:  # fmt: skip
    """Top-1 accuracy of retrieving each case's IHC slide embedding from its H&E embedding (H&E
    alone = the inference path) among the cases `idx`, averaged over IHC stains present in ≥ 2
    of them; chance = 1 / cases. None when no stain qualifies."""
    if len(idx) < 2:
        return None
    was = enc.training
    enc.eval()
    g = torch.Generator().manual_seed(0)
    slides = []
    for b0 in range(0, len(idx), 16):
        x, valid, present = data.batch(idx[b0 : b0 + 16], cfg.n_tokens, g)
        out = slide_outputs(enc, x.to(dev), valid.to(dev), cfg, g)
        slides.append((out["slide"].float().cpu(), present))
    enc.train(was)
    z = F.normalize(torch.cat([s for s, _ in slides]), dim=-1)
    present = torch.cat([p for _, p in slides])
    accs = []
    for s in range(1, z.shape[1]):
        m = present[:, s]
        if int(m.sum()) < 2:
            continue
        sim = z[m, 0] @ z[m, s].T
        accs.append(float((sim.argmax(1) == torch.arange(int(m.sum()))).float().mean()))
    return float(np.mean(accs)) if accs else None


class SlideData:
    """Adapted tokens of every slide (computed once: the adapter is frozen) + batch building."""

    def __init__(self, cohort: CohortFeatures, adapter, stains: list[str], aligned: bool):
        self.stains, self.aligned = stains, aligned
        self.case_ids = [c.case_id for c in cohort.cases]
        self.he, self.ihc, self.maps = [], [], []

        @torch.no_grad()
        def adapt(f: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(f.astype(np.float32))
            if adapter is None:
                return x
            dev = next(adapter.parameters()).device
            return torch.cat(
                [adapter(x[i : i + 8192].to(dev), "10x").float().cpu() for i in range(0, len(x), 8192)]
            ) if len(x) else x  # fmt: skip

        for c in cohort.cases:
            self.he.append(adapt(c.he.features))
            d, m = {}, {}
            for s in stains[1:]:
                if s not in c.ihc:
                    continue
                if aligned:
                    if s not in c.pairs:
                        continue
                    hi, ii = c.pairs[s]
                    mp = torch.full((c.he.n,), -1, dtype=torch.long)
                    mp[torch.from_numpy(hi)] = torch.from_numpy(ii)
                    m[s] = mp
                d[s] = adapt(c.ihc[s].features)
            self.ihc.append(d)
            self.maps.append(m)

    def __len__(self) -> int:
        return len(self.he)

    @property
    def dim(self) -> int:
        return int(self.he[0].shape[1])

    def batch(self, idx: list[int], n_tokens: int, g: torch.Generator):
        """x [B,S,P,D], valid [B,S,P] bool, present [B,S] bool for cases `idx`."""
        S, D = len(self.stains), self.dim
        sel = [torch.randperm(self.he[i].shape[0], generator=g)[:n_tokens] for i in idx]
        P = max(len(s) for s in sel)
        x = torch.zeros(len(idx), S, P, D)
        valid = torch.zeros(len(idx), S, P, dtype=torch.bool)
        for b, (i, si) in enumerate(zip(idx, sel, strict=True)):
            x[b, 0, : len(si)] = self.he[i][si]
            valid[b, 0, : len(si)] = True
            for s_pos, s in enumerate(self.stains[1:], start=1):
                if s not in self.ihc[i]:
                    continue
                f = self.ihc[i][s]
                if self.aligned:
                    j = self.maps[i][s][si]
                    ok = j >= 0
                    x[b, s_pos, : len(si)][ok] = f[j[ok]]
                    valid[b, s_pos, : len(si)] = ok
                else:  # independent sample; index p of IHC unrelated to H&E patch p
                    k = torch.randperm(f.shape[0], generator=g)[:P]
                    x[b, s_pos, : len(k)] = f[k]
                    valid[b, s_pos, : len(k)] = True
        return x, valid, valid.any(dim=2)

    def he_only(self, i: int, n_tokens: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return self.he[i][torch.randperm(self.he[i].shape[0], generator=g)[:n_tokens]]


def build_encoder(cfg: SlideConfig, in_dim: int, n_stains: int) -> tuple[torch.nn.Module, dict]:
    mc = dict(
        in_dim=in_dim,
        n_stains=n_stains,
        stain_embed_dim=cfg.stain_embed_dim,
        use_stain_embed=cfg.stain_embed,
        use_fusion=cfg.fusion,
        fusion_heads=cfg.fusion_heads,
        abmil=dict(cfg.abmil),
    )
    return create_model("slide_encoder", **mc), mc


def stain_drop_mask(valid: torch.Tensor, cfg: SlideConfig, g: torch.Generator) -> torch.Tensor:
    """Keys visible to fusion: IHC stains hidden per case with prob stain_dropout / drop_all_ihc."""
    B, S, _ = valid.shape
    keep = torch.rand(B, S, generator=g) >= cfg.stain_dropout
    keep &= (torch.rand(B, 1, generator=g) >= cfg.drop_all_ihc).expand(B, S)
    keep[:, 0] = True
    return valid & keep[:, :, None].to(valid.device)


HE_BRANCHES = ("alone", "fused")


def slide_outputs(enc, x, valid, cfg: SlideConfig, g: torch.Generator) -> dict:
    """Slide/token embeddings of every stain for the alignment loss.

    "alone" (default): slot 0 = `enc` on the H&E tokens only (the exact inference input, so the
    H&E embedding cannot read IHC tokens at the same location), slots 1.. = `enc` on the IHC
    stains only (fusion among IHC stains, H&E never a key, so the IHC side cannot copy H&E
    either). "fused": one pass over all stains with stain dropout (the old behaviour, which lets
    fusion solve the alignment through the co-located IHC token — a shortcut).
    """
    if cfg.he_query_branch not in HE_BRANCHES:
        raise InputError(f"he_query_branch {cfg.he_query_branch!r}", hint=f"one of {HE_BRANCHES}")
    if cfg.he_query_branch == "fused" or not cfg.fusion:
        fv = stain_drop_mask(valid, cfg, g) if cfg.fusion else None
        return enc(x, valid, fusion_valid=fv)
    # no stain dropout needed here: the H&E pass IS the inference input, and IHC is train-only
    S = x.shape[1]
    he = enc(x[:, :1], valid[:, :1], torch.tensor([0]))
    ihc = enc(x[:, 1:], valid[:, 1:], torch.arange(1, S))
    return {k: torch.cat([he[k], ihc[k]], dim=1) for k in ("slide", "tokens", "attn")}


def alignment_loss(out: dict, valid, present, cfg: SlideConfig, g) -> torch.Tensor:
    """Mean over IHC stains (present in ≥ 2 cases) of InfoNCE + got_weight × GOT."""
    slide, tokens = out["slide"], out["tokens"]
    terms = []
    for s in range(1, slide.shape[1]):
        m = present[:, s]
        if int(m.sum()) < 2:
            continue
        loss = symmetric_infonce(slide[:, 0], slide[:, s], m, cfg.temperature)
        if cfg.got_weight > 0:
            loss = loss + cfg.got_weight * got_loss(
                tokens[:, 0], valid[:, 0], tokens[:, s], valid[:, s], m, cfg.got_tokens,
                generator=g,
            )  # fmt: skip
        terms.append(loss)
    if not terms:
        return slide.sum() * 0.0
    return torch.stack(terms).mean()


@torch.no_grad()
def he_embeddings(enc, data: SlideData, n_tokens: int, dev: torch.device) -> np.ndarray:
    """H&E-only embeddings of all cases (inference path) for RankMe."""
    was = enc.training
    enc.eval()
    Z = [
        enc.encode_he(x.to(dev), m.to(dev))[0]
        for x, m in he_batches(data, range(len(data)), n_tokens)
    ]
    enc.train(was)
    return torch.cat(Z).float().cpu().numpy()


def he_batches(data: SlideData, idx, n_tokens: int, size: int = 64):
    """(x [b,P,D], mask [b,P]) batches of H&E-only inputs, padded and masked: the H&E pass has
    no cross-token mixing before the masked ABMIL pooling, so padding changes nothing (tested)."""
    idx = list(idx)
    for b0 in range(0, len(idx), size):
        toks = [data.he_only(i, n_tokens) for i in idx[b0 : b0 + size]]
        P = max(len(t) for t in toks)
        x = torch.zeros(len(toks), P, toks[0].shape[1])
        m = torch.zeros(len(toks), P, dtype=torch.bool)
        for j, t in enumerate(toks):
            x[j, : len(t)], m[j, : len(t)] = t, True
        yield x, m


@torch.no_grad()
def validation_metrics(enc, head, data: SlideData, idx: list[int], y: torch.Tensor,
                       n_tokens: int, dev: torch.device) -> dict[str, float]:  # fmt: skip
    """Held-out cross-entropy and accuracy of the status head on H&E alone (inference path)."""
    was = enc.training, head.training
    enc.eval(), head.eval()
    z = torch.cat(
        [enc.encode_he(x.to(dev), m.to(dev))[0] for x, m in he_batches(data, idx, n_tokens)]
    )
    logits = head(z).float()
    yv = y[idx].to(dev)
    enc.train(was[0]), head.train(was[1])
    return {
        "val_loss": float(F.cross_entropy(logits, yv)),
        "val_accuracy": float((logits.argmax(1) == yv).float().mean()),
    }


class SlideObjective(Objective):
    """Base of the slide-level objectives: SlideConfig, optional frozen adapter, run config."""

    Config: ClassVar[type[FitConfig]] = SlideConfig
    config: SlideConfig

    @property
    def description(self) -> str:
        return f"stage 2 {self.name}"

    def load_adapter(self, dev: torch.device) -> None:
        """The frozen stage-1 adapter (None without `adapter_dir`), checked against the cohort."""
        self.adapter, self.adapter_config = None, None
        if self.inputs.adapter_dir is None:
            return
        self.adapter, self.adapter_config = load_adapter(self.inputs.adapter_dir, dev)
        trained_on = self.adapter_config["data"]["extractor_hash"]
        if trained_on != self.inputs.cohort.extractor_hash:
            raise InputError(
                f"the adapter was trained on features of another extractor "
                f"({trained_on} vs {self.inputs.cohort.extractor_hash})",
                hint="use the adapter run trained on these feature files",
            )

    def build_encoder(self, n_stains: int, dev: torch.device) -> None:
        self.encoder, self.encoder_config = build_encoder(self.config, self.data.dim, n_stains)
        self.encoder = self.encoder.to(dev)

    def n_items(self) -> int:
        return len(self.data)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"slide_encoder": self.encoder}

    def saved_modules(self) -> dict[str, torch.nn.Module]:
        mods = self.modules()
        return {"adapter": self.adapter, **mods} if self.adapter is not None else mods

    def run_config(self) -> dict[str, Any]:
        acfg = self.adapter_config
        return {
            "kind": self.name,
            "stage": "slide",
            "objective": self.name,
            "input_dim": self.inputs.cohort.dim,
            "stains": list(self.data.stains),
            "he_id": 0,
            "adapter": acfg["adapter"] if acfg else None,
            "adapter_run": {"model_version": acfg.get("model_version"), "train": acfg.get("train")}
            if acfg
            else None,
            "slide_encoder": {"name": "slide_encoder", "config": self.encoder_config},
        }

    def rankme(self) -> dict[str, float]:
        """RankMe of the training H&E embeddings (H&E-only inference path): label-free."""
        Z = he_embeddings(self.encoder, self.data, self.config.n_tokens, self.device)
        return {"rankme": smooth_rank(Z)}


class LabelledSlideObjective(SlideObjective):
    """Base of the objectives with a status head trained on one label task (HistoStainAlign,
    supervised ABMIL). `val_frac` of the labelled cases (stratified) are held out: their labels
    are never trained on, and the checkpoint is the epoch with the lowest held-out CE."""

    needs_labels: ClassVar[bool] = True

    def setup_labels(self) -> None:
        """y (per case, -1 = unknown), class names, train/validation split, status head."""
        cfg = self.config
        y, self.classes = case_labels(self.data.case_ids, self.inputs.labels, cfg.label_task)
        self.train_idx, self.val_idx = holdout_split(y, cfg.val_frac, cfg.seed)
        self.y = torch.from_numpy(y)
        self.y_train = self.y.clone()
        self.y_train[self.val_idx] = -1
        self.head_config = dict(in_dim=self.encoder.embed_dim, n_classes=len(self.classes))
        self.head = create_model("status_head", **self.head_config).to(self.device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"slide_encoder": self.encoder, "head": self.head}

    def selection(self) -> Selection:
        return Selection("val_loss", "min", after=1) if self.val_idx else Selection()

    def epoch_metrics(self) -> dict[str, float]:
        return validation_metrics(self.encoder, self.head, self.data, self.val_idx, self.y,
                                  self.config.n_tokens, self.device)  # fmt: skip

    def run_config(self) -> dict[str, Any]:
        return {
            **super().run_config(),
            "head": {"name": "status_head", "config": self.head_config},
            "classes": self.classes,
            "label_task": self.config.label_task,
            "validation": {"cases": [self.data.case_ids[i] for i in self.val_idx]},
        }
