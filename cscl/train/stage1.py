"""Stage 1: train the patch adapter with patch-wise cross-stain contrastive alignment.

For each IHC stain, H&E tokens (queries) are matched to the IHC token of the SAME tissue
location (positive; `pairing="location"` via the registration, or `"identity"` for slides that
already share coordinates); every other IHC token of the batch is a negative. Loss per stain:
`nce_weight` × patch InfoNCE (L2-normalised, T=0.07) + `got_weight` × OT token loss.
`pairing="random"` reproduces the reference bug (independently sampled patches paired by index).
Optional 5x scale: each 5x token is the mean of the (up to) 2×2 10x tokens it covers; it has its
own adapter and its own location pairs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cscl.data import CohortFeatures, SlideTokens
from cscl.errors import InputError
from cscl.models import create_model
from cscl.models.losses import got_loss, patch_nce
from cscl.train.checkpoint import save_run
from cscl.train.common import autocast, environment, pick_device, progress, seed_everything
from cscl.train.schedule import warmup_cosine


@dataclass
class AdapterConfig:
    epochs: int = 120
    batch_size: int = 8  # cases per step
    pairs_per_case: int = 256  # token pairs per case and stain per step
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_epochs: int = 5
    min_lr: float = 1e-8
    temperature: float = 0.07
    nce_weight: float = 10.0
    got_weight: float = 1.0
    got_tokens: int = 256
    pairing: str = "location"  # location | identity | random
    max_dist_frac: float = 0.75
    scales: list[str] = field(default_factory=lambda: ["10x"])
    reduction: int = 4
    residual: bool = False
    alpha: float = 0.2
    seed: int = 0
    device: str | None = None
    quiet: bool = False


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
    import copy

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


def train_adapter(
    cohort: CohortFeatures,
    out_dir: str | Path,
    cfg: AdapterConfig | None = None,
    registrations=None,
    data_info: dict | None = None,
) -> Path:
    """Train the stage-1 adapter and write a run dir (config.json + adapter.pt)."""
    cfg = cfg or AdapterConfig()
    g = seed_everything(cfg.seed)
    dev = pick_device(cfg.device)
    data = _scale_pairs(cohort, registrations, cfg)
    n_items = len(data[cfg.scales[0]])
    if n_items == 0:
        raise InputError(
            "no case has an IHC slide with usable pairs; stage 1 needs paired H&E/IHC slides",
            hint="check the manifest's IHC rows and the registration table (ok column)",
        )
    model_cfg = dict(
        dim=cohort.dim,
        scales=list(cfg.scales),
        reduction=cfg.reduction,
        residual=cfg.residual,
        alpha=cfg.alpha,
    )
    adapter = create_model("patch_adapter", **model_cfg).to(dev)
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, -(-n_items // cfg.batch_size))
    sched = warmup_cosine(
        opt, cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch, cfg.min_lr
    )
    history = []
    t0 = time.perf_counter()
    with progress(cfg.quiet) as prog:
        task = prog.add_task("stage 1 adapter", total=cfg.epochs, info="")
        for epoch in range(cfg.epochs):
            order = torch.randperm(n_items, generator=g).tolist()
            tot, nb = 0.0, 0
            for b0 in range(0, n_items, cfg.batch_size):
                idx = order[b0 : b0 + cfg.batch_size]
                loss = torch.zeros((), device=dev)
                with autocast(dev):
                    for scale in cfg.scales:
                        loss = loss + _batch_loss(adapter, data[scale], idx, scale, cfg, g, dev)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach())
                nb += 1
            history.append({"epoch": epoch, "loss": tot / max(nb, 1)})
            prog.update(task, advance=1, info=f"loss {tot / max(nb, 1):.4f}")
    config = {
        "kind": "adapter",
        "stage": "adapter",
        "objective": "cscl",
        "input_dim": cohort.dim,
        "stains": cohort.stains,
        "he_id": 0,
        "adapter": {"name": "patch_adapter", "config": model_cfg},
        "train": asdict(cfg),
        "seed": cfg.seed,
        "data": {
            "fingerprint": cohort.fingerprint,
            "extractor_hash": cohort.extractor_hash,
            "encoder": cohort.encoder,
            "n_cases": len(cohort.cases),
            "n_cases_with_pairs": n_items,
            **(data_info or {}),
        },
        "history": history,
        "train_seconds": time.perf_counter() - t0,
        "env": environment(),
    }
    return save_run(out_dir, config, {"adapter": adapter})


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
