"""Stage 2: slide encoder training (CSCL, MADELEINE-style) and the shared MIL training loop.

CSCL: frozen stage-1 adapter → location-aligned tokens [B,S,P,D] (IHC token p = the IHC patch
registered to H&E patch p) → stain code → cross-stain fusion → gated ABMIL per stain → symmetric
InfoNCE (T=0.001) between H&E and each IHC slide embedding, masked for missing stains, +
`got_weight` × OT loss on token embeddings. Losses are averaged over the IHC stains present.
Default `he_query_branch="alone"` (`slide_outputs`): the H&E embedding in the loss is computed
from H&E tokens alone — the inference computation — and IHC embeddings from IHC stains alone, so
fusion cannot hand the co-located IHC token to the H&E query (the shortcut found by the planted-
signal benchmark). `"fused"` reproduces the old single pass (fusion over all stains, with stain
dropout: each IHC stain hidden with prob `stain_dropout`, all with prob `drop_all_ihc`).
MADELEINE-style: no adapter, no fusion, no stain code, same losses.
The checkpoint is chosen by RankMe smooth rank of the training H&E embeddings (H&E-only path)
after `rankme_after` epochs. `run_training` is reused by HistoStainAlign and supervised ABMIL.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cscl.data import CohortFeatures
from cscl.errors import InputError
from cscl.models import create_model
from cscl.models.losses import got_loss, symmetric_infonce
from cscl.train.checkpoint import save_run
from cscl.train.common import autocast, environment, pick_device, progress, seed_everything
from cscl.train.rankme import smooth_rank
from cscl.train.schedule import warmup_cosine

OBJECTIVES = ("cscl", "madeleine", "histostainalign", "supervised")


@dataclass
class SlideConfig:
    objective: str = "cscl"
    epochs: int = 120
    batch_size: int = 24
    n_tokens: int = 2048
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_epochs: int = 5
    min_lr: float = 1e-8
    temperature: float = 0.001
    got_weight: float = 1.0
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
    seed: int = 0
    device: str | None = None
    quiet: bool = False


def objective_defaults(objective: str) -> dict:
    """Paper hyper-parameters per objective (METHOD.md); CLI flags override them."""
    if objective == "madeleine":
        return dict(fusion=False, stain_embed=False, pairing="random", temperature=0.001)
    if objective == "histostainalign":
        return dict(
            fusion=False, stain_embed=False, pairing="random", temperature=0.01, lr=5e-5,
            min_lr=5e-7, warmup_epochs=2, epochs=30, batch_size=8, n_tokens=4096, got_weight=0.0,
        )  # fmt: skip
    if objective == "supervised":
        return dict(fusion=False, stain_embed=False, pairing="random", got_weight=0.0)
    if objective == "cscl":
        return {}
    raise InputError(f"unknown objective {objective!r}", hint=f"one of {OBJECTIVES}")


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


def run_training(
    *,
    data: SlideData,
    modules: dict[str, torch.nn.Module],
    loss_fn: Callable[[list[int], torch.Generator], torch.Tensor],
    cfg: SlideConfig,
    g: torch.Generator,
    dev: torch.device,
    n_items: int | None = None,
    desc: str = "stage 2",
) -> dict:
    """AdamW + warm-up/cosine loop; RankMe selection of the encoder after `rankme_after`."""
    n = n_items or len(data)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    spe = max(1, -(-n // cfg.batch_size))
    sched = warmup_cosine(opt, cfg.epochs * spe, cfg.warmup_epochs * spe, cfg.min_lr)
    enc = modules["slide_encoder"]
    best = {"rankme": -1.0, "epoch": None}
    best_state = None
    history = []
    slides_done, step_time = 0, 0.0
    with progress(cfg.quiet) as prog:
        task = prog.add_task(desc, total=cfg.epochs, info="")
        for epoch in range(cfg.epochs):
            for m in modules.values():
                m.train()
            order = torch.randperm(n, generator=g).tolist()
            tot, nb = 0.0, 0
            for b0 in range(0, n, cfg.batch_size):
                idx = order[b0 : b0 + cfg.batch_size]
                t = time.perf_counter()
                with autocast(dev):
                    loss = loss_fn(idx, g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                sched.step()
                step_time += time.perf_counter() - t
                slides_done += len(idx)
                tot += float(loss.detach())
                nb += 1
            rec = {"epoch": epoch, "loss": tot / max(nb, 1)}
            if epoch + 1 >= cfg.rankme_after or epoch == cfg.epochs - 1:
                Z = he_embeddings(enc, data, cfg.n_tokens, dev)
                rec["rankme"] = smooth_rank(Z)
                if epoch + 1 >= cfg.rankme_after and rec["rankme"] > best["rankme"]:
                    best = {"rankme": rec["rankme"], "epoch": epoch}
                    best_state = {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}
            history.append(rec)
            prog.update(task, advance=1, info=f"loss {rec['loss']:.4f}")
    if best_state is None:  # rankme_after > epochs: keep the last epoch
        best = {"rankme": history[-1].get("rankme"), "epoch": cfg.epochs - 1}
    else:
        for k, m in modules.items():
            m.load_state_dict(best_state[k])
    for m in modules.values():
        m.eval()
    return {
        "history": history,
        "selection": {"method": "rankme", "after_epoch": cfg.rankme_after, **best},
        "throughput": {
            "cases_per_s": slides_done / step_time if step_time else None,
            "step_seconds_total": step_time,
        },
    }


@torch.no_grad()
def he_embeddings(enc, data: SlideData, n_tokens: int, dev: torch.device) -> np.ndarray:
    """H&E-only embeddings of all cases (inference path) for RankMe."""
    was = enc.training
    enc.eval()
    Z = [enc.encode_he(data.he_only(i, n_tokens)[None].to(dev))[0] for i in range(len(data))]
    enc.train(was)
    return torch.cat(Z).float().cpu().numpy()


def _load_adapter(adapter_dir: str | Path | None, dev):
    if adapter_dir is None:
        return None, None
    from cscl.train.checkpoint import _load_module, read_config

    acfg = read_config(adapter_dir)
    if not acfg.get("adapter"):
        raise InputError(f"{adapter_dir} holds no adapter (kind {acfg.get('kind')!r})")
    return _load_module(Path(adapter_dir), acfg, "adapter", dev), acfg


def base_config(cohort, cfg: SlideConfig, acfg: dict | None, data_info: dict | None) -> dict:
    if acfg is not None and acfg["data"]["extractor_hash"] != cohort.extractor_hash:
        raise InputError(
            "the adapter was trained on features of another extractor "
            f"({acfg['data']['extractor_hash']} vs {cohort.extractor_hash})",
            hint="use the adapter run trained on these feature files",
        )
    return {
        "stage": "slide",
        "objective": cfg.objective,
        "input_dim": cohort.dim,
        "stains": cohort.stains,
        "he_id": 0,
        "adapter": acfg["adapter"] if acfg else None,
        "adapter_run": {"model_version": acfg.get("model_version"), "train": acfg.get("train")}
        if acfg
        else None,
        "train": asdict(cfg),
        "seed": cfg.seed,
        "data": {
            "fingerprint": cohort.fingerprint,
            "extractor_hash": cohort.extractor_hash,
            "encoder": cohort.encoder,
            "n_cases": len(cohort.cases),
            **(data_info or {}),
        },
        "env": environment(),
    }


def train_slide_encoder(
    cohort: CohortFeatures,
    out_dir: str | Path,
    cfg: SlideConfig | None = None,
    adapter_dir: str | Path | None = None,
    registrations=None,
    data_info: dict | None = None,
) -> Path:
    """CSCL / MADELEINE-style stage 2. Writes config.json, slide_encoder.pt (+ adapter.pt)."""
    cfg = cfg or SlideConfig()
    if cfg.objective not in ("cscl", "madeleine"):
        raise InputError(f"train_slide_encoder handles cscl/madeleine, not {cfg.objective!r}")
    g = seed_everything(cfg.seed)
    dev = pick_device(cfg.device)
    adapter, acfg = _load_adapter(adapter_dir, dev)
    if cfg.objective == "madeleine" and adapter is not None:
        raise InputError("the MADELEINE-style objective uses no adapter", hint="drop --adapter")
    aligned = cfg.fusion and cfg.pairing in ("location", "identity")
    if aligned:
        cohort.attach_pairs(registrations, cfg.pairing, cfg.max_dist_frac)
    data = SlideData(cohort, adapter, cohort.stains, aligned)
    if len(cohort.stains) < 2:
        raise InputError("stage 2 alignment needs IHC slides; the cohort has only H&E")
    enc, mc = build_encoder(cfg, data.dim, len(cohort.stains))
    enc = enc.to(dev)

    def loss_fn(idx, g):
        x, valid, present = data.batch(idx, cfg.n_tokens, g)
        x, valid, present = x.to(dev), valid.to(dev), present.to(dev)
        out = slide_outputs(enc, x, valid, cfg, g)
        return alignment_loss(out, valid, present, cfg, g)

    res = run_training(data=data, modules={"slide_encoder": enc}, loss_fn=loss_fn, cfg=cfg, g=g,
                       dev=dev, desc=f"stage 2 {cfg.objective}")  # fmt: skip
    config = base_config(cohort, cfg, acfg, data_info)
    config.update(kind=cfg.objective, slide_encoder={"name": "slide_encoder", "config": mc}, **res)
    mods = {"slide_encoder": enc}
    if adapter is not None:
        mods = {"adapter": adapter, **mods}
    return save_run(out_dir, config, mods)
