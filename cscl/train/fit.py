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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cscl.errors import InputError
from cscl.io.storage import atomic_path
from cscl.progress import progress
from cscl.runtime import pick_device
from cscl.train.common import autocast, seed_everything
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
        # plain log lines: one per epoch (at most 100 in all), each with the epoch's loss
        task = prog.add_task(objective.description, total=cfg.epochs,
                             log_every=max(1 / max(cfg.epochs, 1), 0.01), min_gap_s=0)  # fmt: skip
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
            prog.update(task, advance=1, info=_epoch_info(rec, sel.metric))
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


def _epoch_info(rec: dict[str, Any], metric: str | None) -> str:
    """`epoch 3 loss 0.6931 rankme 12.3`: what a log line says about the epoch just trained."""
    info = f"epoch {rec['epoch'] + 1} loss {rec['loss']:.4f}"
    value = rec.get(metric) if metric else None
    if isinstance(value, int | float) and math.isfinite(value):
        info += f" {metric} {value:.4g}"
    return info


HISTORY_CSV = "history.csv"
LOSS_PNG = "loss.png"


def write_history(out_dir: str | Path, history: list[dict]) -> dict[str, Path]:
    """The loss curve as files a person can open: history.csv (one row per epoch: loss and the
    objective's per-epoch metrics) and loss.png (loss, plus each metric in its own panel).

    Why files and not only config.json's "history": a pod's run dir is browsed in the Kubeflow UI
    and a laptop's in a file browser; the pretrain components return both as artifacts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(history)
    with atomic_path(out / HISTORY_CSV) as tmp:
        df.to_csv(tmp, index=False)
    df["epoch"] = df.get("epoch", pd.Series(range(len(df)))) + 1
    panels = ["loss"] + [
        c for c in df.columns if c not in ("epoch", "loss") and pd.api.types.is_numeric_dtype(df[c])
    ][:3]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, col in zip(axes[0], panels, strict=True):
        sub = df[["epoch", col]].dropna()
        ax.plot(sub["epoch"], sub[col], marker="." if len(sub) <= 30 else None)
        ax.set_xlabel("epoch")
        ax.set_title(col)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out / LOSS_PNG) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return {"history": out / HISTORY_CSV, "curve": out / LOSS_PNG}


def curve_html(run_dir: str | Path) -> str:
    """A self-contained HTML page of a run's loss curve (loss.png inlined) and its per-epoch table,
    for a Kubeflow `HTML` artifact: the UI shows it beside the task, no bucket browsing needed."""
    import base64
    import html

    import pandas as pd

    run = Path(run_dir)
    png = base64.b64encode((run / LOSS_PNG).read_bytes()).decode("ascii")
    table = pd.read_csv(run / HISTORY_CSV).to_html(index=False, float_format="%.4g", border=0)
    title = html.escape(run.name or "run")
    return (
        f"<!doctype html><meta charset=utf-8><title>training curve · {title}</title>"
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{padding:2px 8px;text-align:right}</style>"
        f"<h2>Training curve</h2><img alt='loss per epoch' src='data:image/png;base64,{png}'>"
        f"<h3>Per epoch</h3>{table}"
    )
