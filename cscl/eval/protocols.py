"""Evaluation protocols (few-shot, k-fold, survival): one function each, found by name.

Why a registry: `evaluate` runs every declared task × protocol × embeddings table. Which task kind
a protocol fits, how it runs and what it adds to metrics.json (its section of a method's results,
the paired scores the Wilcoxon tests compare, out-of-fold predictions) belongs to the protocol, so
a new protocol is one decorated function here, not another branch in `evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cscl.errors import InputError, TooFewCases
from cscl.eval.fewshot import few_shot
from cscl.eval.kfold import KFoldResult, kfold_eval
from cscl.eval.survival import survival_eval
from cscl.eval.tasks import CLASSIFICATION, SURVIVAL, ClassTarget, SurvTarget
from cscl.eval.triage import CALIBRATION_METHOD, TARGET_SENSITIVITIES, ihc_triage, triage_marker


@dataclass(frozen=True)
class EvalConfig:
    """Every setting of one evaluation; recorded in metrics.json (`config`)."""

    protocols: tuple[str, ...] = ("fewshot", "kfold", "survival")
    folds: int = 5
    n_boot: int = 1000
    seed: int = 0
    boot_seed: int = 42
    ks: tuple[int, ...] = (1, 5, 10, 25)
    draws: int = 10
    fewshot_scale: bool = False
    n_iter: int = 10
    inner_folds: int = 5
    cox_components: int | None = None
    cox_alpha: float = 1.0
    triage_sensitivities: tuple[float, ...] = TARGET_SENSITIVITIES  # () = no IHC triage

    def describe(self, task_names: list[str]) -> dict:
        """The `config` block of metrics.json (format cscl-eval/1)."""
        return {
            "protocols": list(self.protocols),
            "tasks": task_names,
            "folds": self.folds,
            "bootstrap": self.n_boot,
            "seed": self.seed,
            "bootstrap_seed": self.boot_seed,
            "fewshot": {
                "ks": list(self.ks),
                "draws": self.draws,
                "C": 1.0,
                "standard_scaler": self.fewshot_scale,
            },
            "kfold": {
                "n_iter": self.n_iter,
                "inner_folds": self.inner_folds,
                "C_grid": "logspace(-3, 2, 50)",
            },
            "survival": {
                "n_components": self.cox_components or "auto (events/10, 1..10)",
                "alpha": self.cox_alpha,
            },
            "triage": {
                "target_sensitivities": list(self.triage_sensitivities),
                "calibration": CALIBRATION_METHOD,
                "tasks": "binary <marker>_status tasks (positive/high class), with kfold",
            },
        }


@dataclass(frozen=True)
class TaskData:
    """One task's cases for one embeddings table: rows of `X` follow `target` and `case_ids`."""

    task: str
    X: np.ndarray
    target: ClassTarget | SurvTarget
    case_ids: np.ndarray


@dataclass
class ProtocolOutput:
    """What one protocol contributes for one task and one embeddings table."""

    section: object  # stored as tasks[task].results[method][protocol] in metrics.json
    paired: dict[str, np.ndarray] = field(default_factory=dict)  # scores paired across methods
    predictions: pd.DataFrame | None = None  # out-of-fold rows with a `score` column if any
    skipped: list[dict] = field(default_factory=list)  # {"protocol", "reason"}


ProtocolFn = Callable[[TaskData, EvalConfig], ProtocolOutput]


@dataclass(frozen=True)
class Protocol:
    name: str
    kind: str  # the task kind it evaluates: CLASSIFICATION or SURVIVAL
    run: ProtocolFn


_REGISTRY: dict[str, Protocol] = {}


def protocol(name: str, kind: str) -> Callable[[ProtocolFn], ProtocolFn]:
    """Register `fn(data, cfg) -> ProtocolOutput` as protocol `name` for tasks of `kind`."""

    def add(fn: ProtocolFn) -> ProtocolFn:
        _REGISTRY[name] = Protocol(name, kind, fn)
        return fn

    return add


def protocol_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_protocol(name: str) -> Protocol:
    return _REGISTRY[name]


def parse_protocols(spec: str | Iterable[str]) -> list[str]:
    """`"kfold, survival"` or a list → registered protocol names (order kept)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = [p.strip().lower() for p in items if p.strip()]
    bad = [p for p in out if p not in _REGISTRY]
    if bad or not out:
        raise InputError(
            f"unknown protocol(s) {bad or out}", hint=f"choose from {protocol_names()}"
        )
    return out


def _fewshot_rows(df: pd.DataFrame) -> list[dict]:
    """few_shot's table as JSON rows; NaN cells of skipped rows are left out."""
    rows = []
    for rec in df.to_dict("records"):
        row = {k: v for k, v in rec.items() if not (isinstance(v, float) and math.isnan(v))}
        for k in ("k", "draws", "n_train", "n_test"):  # NaN of skipped rows made them floats
            if k in row:
                row[k] = int(row[k])
        rows.append(row)
    return rows


@protocol("fewshot", CLASSIFICATION)
def fewshot_protocol(data: TaskData, cfg: EvalConfig) -> ProtocolOutput:
    """MADELEINE-style few-shot probe: k labelled cases per class, `draws` draws per k."""
    df = few_shot(
        data.X, data.target.y, ks=cfg.ks, draws=cfg.draws, seed=cfg.seed, scale=cfg.fewshot_scale
    )
    out = ProtocolOutput(section=_fewshot_rows(df))
    for row in out.section:
        if row["status"] == "skipped":
            out.skipped.append({"protocol": f"fewshot k={row['k']}", "reason": row["reason"]})
        else:
            out.paired[f"fewshot_auc_k{row['k']}"] = np.asarray(row["auc_draws"])
    return out


@protocol("kfold", CLASSIFICATION)
def kfold_protocol(data: TaskData, cfg: EvalConfig) -> ProtocolOutput:
    """Stratified k-fold linear probe with a C search and bootstrap CIs."""
    r = kfold_eval(
        data.X,
        data.target.y,
        data.case_ids,
        folds=cfg.folds,
        seed=cfg.seed,
        n_iter=cfg.n_iter,
        inner_folds=cfg.inner_folds,
        n_boot=cfg.n_boot,
        boot_seed=cfg.boot_seed,
        task=data.task,
    )
    section = {
        "metrics": r.metrics,
        "per_fold": r.per_fold,
        "roc": r.roc,
        "confusion": r.confusion,
        "notes": r.notes,
    }
    paired = {}
    for m in ("auc", "f1_weighted", "balanced_accuracy"):
        paired[f"kfold_{m}_bootstrap"] = r.boot[m]
        paired[f"kfold_{m}_folds"] = np.array([f.get(m, np.nan) for f in r.per_fold])
    preds = r.predictions.copy()
    if r.roc:
        preds["score"] = preds[f"prob_{r.roc['positive_class']}"]
    out = ProtocolOutput(section, paired, preds)
    triage_step(data, r, cfg, out)
    return out


def triage_step(data: TaskData, r: KFoldResult, cfg: EvalConfig, out: ProtocolOutput) -> None:
    """IHC triage of a binary `<marker>_status` task from the k-fold probe's out-of-fold
    probabilities (cscl.eval.triage), stored as the k-fold section's `triage`; too few cases
    of a class is a skip with its reason."""
    found = triage_marker(data.task, r.classes)
    if found is None or not cfg.triage_sensitivities:
        return
    marker, positive = found
    p = r.predictions
    try:
        out.section["triage"] = ihc_triage(
            p[f"prob_{positive}"].to_numpy(float),
            p["y_true"].to_numpy(str),
            p["fold"].to_numpy(),
            task=data.task,
            positive_class=positive,
            marker=marker,
            targets=cfg.triage_sensitivities,
            n_boot=cfg.n_boot,
            boot_seed=cfg.boot_seed,
        )
    except TooFewCases as exc:
        out.skipped.append({"protocol": "kfold triage", "reason": exc.message})


@protocol("survival", SURVIVAL)
def survival_protocol(data: TaskData, cfg: EvalConfig) -> ProtocolOutput:
    """Cox model out of fold: C-index with bootstrap CI, log-rank test of a median risk split."""
    t = data.target
    s = survival_eval(
        data.X,
        t.time,
        t.event,
        data.case_ids,
        folds=cfg.folds,
        seed=cfg.seed,
        n_components=cfg.cox_components,
        alpha=cfg.cox_alpha,
        n_boot=cfg.n_boot,
        boot_seed=cfg.boot_seed,
        task=data.task,
    )
    section = {
        "cindex": s.cindex,
        "per_fold": s.per_fold,
        "logrank": s.logrank,
        "n_components": s.n_components,
        "notes": s.notes,
    }
    paired = {
        "cindex_bootstrap": s.boot,
        "cindex_folds": np.array([f.get("cindex", np.nan) for f in s.per_fold]),
    }
    return ProtocolOutput(section, paired, s.predictions.assign(score=s.predictions["risk"]))
