"""The one training loop (Lightning's Trainer half): `fit(objective)`.

Why one loop: stage 1, stage 2 and the baselines each had their own copy, and they drifted (stage 1
had no gradient clipping). `fit` owns what is the same for every objective — seeding, device,
AdamW, linear warm-up + cosine LR per step, gradient clipping, bf16 autocast on GPU, checkpoint
selection and the history (loss per epoch + the objective's per-epoch metrics). The objective
(`cscl.train.objective.Objective`) owns its models, its batches, its loss and its selection rule.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import torch

from cscl.errors import InputError
from cscl.runtime import pick_device
from cscl.train.common import autocast, progress, seed_everything
from cscl.train.schedule import warmup_cosine

if TYPE_CHECKING:
    from cscl.train.objective import Objective


@dataclass(frozen=True)
class FitConfig:
    """Trainer settings shared by every objective (objective configs subclass it)."""

    epochs: int = 120
    batch_size: int = 8  # items (cases) per step
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_epochs: int = 5
    min_lr: float = 1e-8
    grad_clip: float | None = 5.0  # max global gradient norm; None/0 = off
    amp: bool = True  # bf16 autocast on GPU (no effect on CPU)
    seed: int = 0
    device: str | None = None
    quiet: bool = False


@dataclass(frozen=True)
class Selection:
    """Which epoch's weights are kept: the best `metric` (from `Objective.epoch_metrics`) among
    epochs ≥ `after` (1-based count), or the last epoch when `metric` is None."""

    metric: str | None = None
    mode: str = "max"  # max | min
    after: int = 1

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best


@dataclass
class FitResult:
    """What `fit` learned about the run; `as_config()` is merged into the run's config.json."""

    history: list[dict] = field(default_factory=list)
    selection: dict = field(default_factory=dict)
    throughput: dict = field(default_factory=dict)
    train_seconds: float = 0.0

    def as_config(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "selection": self.selection,
            "throughput": self.throughput,
            "train_seconds": self.train_seconds,
        }


def clamp_schedule(cfg: FitConfig) -> FitConfig:
    """Short runs (pipelines, tests): warm-up and selection start no later than the last epoch."""
    last = max(cfg.epochs - 1, 0)
    kv: dict[str, Any] = {"warmup_epochs": min(cfg.warmup_epochs, last)}
    if "rankme_after" in {f.name for f in fields(cfg)}:
        kv["rankme_after"] = min(cfg.rankme_after, last)
    return replace(cfg, **kv)


def fit(objective: Objective, config: FitConfig | None = None) -> FitResult:
    """Train `objective` in place (best weights restored, modules left in eval mode)."""
    cfg = config or objective.config
    g = seed_everything(cfg.seed)
    dev = pick_device(cfg.device)
    objective.setup(dev)  # after seeding: model initialisation is reproducible
    n = objective.n_items()
    if n == 0:
        raise InputError(
            f"objective {objective.name!r} found nothing to train on",
            hint="check the manifest, labels and registration inputs",
        )
    modules = objective.modules()
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    spe = max(1, -(-n // cfg.batch_size))
    sched = warmup_cosine(opt, cfg.epochs * spe, cfg.warmup_epochs * spe, cfg.min_lr)
    sel = objective.selection()
    best, best_epoch, best_state = None, None, None
    history: list[dict] = []
    items_done, step_time, t0 = 0, 0.0, time.perf_counter()
    with progress(cfg.quiet) as prog:
        task = prog.add_task(objective.description, total=cfg.epochs, info="")
        for epoch in range(cfg.epochs):
            for m in modules.values():
                m.train()
            order = torch.randperm(n, generator=g).tolist()
            tot, nb = 0.0, 0
            for b0 in range(0, n, cfg.batch_size):
                idx = order[b0 : b0 + cfg.batch_size]
                t = time.perf_counter()
                with autocast(dev, cfg.amp):
                    loss = objective.loss(idx, g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                step_time += time.perf_counter() - t
                items_done += len(idx)
                tot += float(loss.detach())
                nb += 1
            rec: dict[str, Any] = {"epoch": epoch, "loss": tot / max(nb, 1)}
            if sel.metric and (epoch + 1 >= sel.after or epoch == cfg.epochs - 1):
                rec.update(objective.epoch_metrics())
                value = rec.get(sel.metric)
                eligible = epoch + 1 >= sel.after and value is not None and math.isfinite(value)
                if eligible and sel.better(value, best):
                    best, best_epoch = value, epoch
                    best_state = {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}
            history.append(rec)
            prog.update(task, advance=1, info=f"loss {rec['loss']:.4f}")
    if not sel.metric:
        selection: dict[str, Any] = {"method": "last", "epoch": cfg.epochs - 1}
    elif best_state is None:  # selection starts after the last epoch: keep the last one
        selection = {"method": sel.metric, "after_epoch": sel.after, "mode": sel.mode,
                     sel.metric: history[-1].get(sel.metric), "epoch": cfg.epochs - 1}  # fmt: skip
    else:
        for k, m in modules.items():
            m.load_state_dict(best_state[k])
        selection = {"method": sel.metric, "after_epoch": sel.after, "mode": sel.mode,
                     sel.metric: best, "epoch": best_epoch}  # fmt: skip
    for m in modules.values():
        m.eval()
    return FitResult(
        history=history,
        selection=selection,
        throughput={
            "cases_per_s": items_done / step_time if step_time else None,
            "step_seconds_total": step_time,
        },
        train_seconds=time.perf_counter() - t0,
    )
