"""Supervised ABMIL baseline: gated ABMIL on H&E trained with cross-entropy on one label.

The slide embedding (pre-head, E-dim) is what `cscl embed` writes, so the few-shot probe compares
it with the self-supervised embeddings on equal terms.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch.nn.functional as F

from cscl.data import CohortFeatures
from cscl.errors import InputError
from cscl.io.manifest import HE
from cscl.models import create_model
from cscl.train.checkpoint import save_run
from cscl.train.common import pick_device, seed_everything
from cscl.train.labels import case_labels
from cscl.train.stage2 import (
    SlideConfig,
    SlideData,
    _load_adapter,
    base_config,
    build_encoder,
    run_training,
)


def train_supervised(
    cohort: CohortFeatures,
    labels: pd.DataFrame,
    out_dir: str | Path,
    cfg: SlideConfig,
    adapter_dir: str | Path | None = None,
    data_info: dict | None = None,
) -> Path:
    if not cfg.label_task:
        raise InputError("the supervised baseline needs a label", hint="pass --label-task")
    import torch

    g = seed_everything(cfg.seed)
    dev = pick_device(cfg.device)
    adapter, acfg = _load_adapter(adapter_dir, dev)
    data = SlideData(cohort, adapter, [HE], aligned=False)
    y_np, classes = case_labels(data.case_ids, labels, cfg.label_task)
    labelled = [i for i in range(len(data)) if y_np[i] >= 0]
    y_all = torch.from_numpy(y_np)
    cfg.fusion = cfg.stain_embed = False
    enc, mc = build_encoder(cfg, data.dim, 1)
    head_cfg = dict(in_dim=enc.embed_dim, n_classes=len(classes))
    head = create_model("status_head", **head_cfg)
    enc, head = enc.to(dev), head.to(dev)

    def loss_fn(idx, g):
        idx = [labelled[i] for i in idx]
        x, valid, _ = data.batch(idx, cfg.n_tokens, g)
        z, _ = enc.encode_he(x[:, 0].to(dev), valid[:, 0].to(dev))
        return F.cross_entropy(head(z).float(), y_all[idx].to(dev))

    res = run_training(data=data, modules={"slide_encoder": enc, "head": head}, loss_fn=loss_fn,
                       cfg=cfg, g=g, dev=dev, n_items=len(labelled),
                       desc="stage 2 supervised")  # fmt: skip
    config = base_config(cohort, cfg, acfg, data_info)
    config.update(
        kind="supervised",
        stains=[HE],
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
