"""HistoStainAlign objective (arXiv 2506.15853): one slide encoder shared by H&E and IHC.

Loss per batch, equal weights: intra = MSE(H&E embedding, embedding of the same H&E with
`mask_frac` = 50 % of its tokens masked); inter = symmetric InfoNCE (T=0.01) between L2-normalised
H&E and IHC slide embeddings (missing IHC masked); CE of the status head on the H&E embedding
(cases without a label masked). `TrainedModel.predict_status` gives probabilities from H&E.
Tokens are the stage-1 adapted features when `adapter_dir` is given, else raw features.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from cscl.data import CohortFeatures
from cscl.errors import InputError
from cscl.io.manifest import HE
from cscl.models import create_model
from cscl.models.losses import masked_view_mse, random_token_mask, symmetric_infonce
from cscl.train.checkpoint import save_run
from cscl.train.common import pick_device, seed_everything
from cscl.train.labels import TASK_STAIN, case_labels
from cscl.train.stage2 import (
    SlideConfig,
    SlideData,
    _load_adapter,
    base_config,
    build_encoder,
    run_training,
)


def train_histostainalign(
    cohort: CohortFeatures,
    labels: pd.DataFrame,
    out_dir: str | Path,
    cfg: SlideConfig,
    adapter_dir: str | Path | None = None,
    data_info: dict | None = None,
) -> Path:
    if not cfg.label_task:
        raise InputError("HistoStainAlign needs a label task", hint="pass --label-task er_status")
    g = seed_everything(cfg.seed)
    dev = pick_device(cfg.device)
    stain = (cfg.ihc_stain or TASK_STAIN.get(cfg.label_task, "")).upper()
    if stain not in cohort.stains:
        raise InputError(
            f"HistoStainAlign aligns H&E with one IHC stain; {stain or '(none)'} is not in the "
            f"cohort (stains {cohort.stains})",
            hint="pass --ihc-stain with one of the cohort's IHC stains",
        )
    adapter, acfg = _load_adapter(adapter_dir, dev)
    data = SlideData(cohort, adapter, [HE, stain], aligned=False)
    y_all, classes = case_labels(data.case_ids, labels, cfg.label_task)
    y_all = torch.from_numpy(y_all)
    cfg.fusion = cfg.stain_embed = False
    enc, mc = build_encoder(cfg, data.dim, 2)
    head_cfg = dict(in_dim=enc.embed_dim, n_classes=len(classes))
    head = create_model("status_head", **head_cfg)
    enc, head = enc.to(dev), head.to(dev)

    def loss_fn(idx, g):
        x, valid, present = data.batch(idx, cfg.n_tokens, g)
        x, valid, present = x.to(dev), valid.to(dev), present.to(dev)
        B, S, P, D = x.shape
        z, _, _ = enc.abmil(x.reshape(B * S, P, D), valid.reshape(B * S, P))
        z = z.view(B, S, -1)
        masked = random_token_mask(valid[:, 0], cfg.mask_frac, g)
        zm, _, _ = enc.abmil(x[:, 0], masked)
        intra = masked_view_mse(z[:, 0], zm)
        inter = symmetric_infonce(z[:, 0], z[:, 1], present[:, 1], cfg.temperature)
        y = y_all[idx].to(dev)
        lab = y >= 0
        logits = head(z[:, 0])
        ce = F.cross_entropy(logits[lab].float(), y[lab]) if lab.any() else logits.sum() * 0
        return intra + inter + ce

    res = run_training(data=data, modules={"slide_encoder": enc, "head": head}, loss_fn=loss_fn,
                       cfg=cfg, g=g, dev=dev, desc="stage 2 histostainalign")  # fmt: skip
    config = base_config(cohort, cfg, acfg, data_info)
    config.update(
        kind="histostainalign",
        stains=[HE, stain],
        slide_encoder={"name": "slide_encoder", "config": mc},
        head={"name": "status_head", "config": head_cfg},
        classes=classes,
        label_task=cfg.label_task,
        **res,
    )
    mods = {"slide_encoder": enc, "head": head}
    if adapter is not None:
        mods = {"adapter": adapter, **mods}
    return save_run(out_dir, config, mods)
