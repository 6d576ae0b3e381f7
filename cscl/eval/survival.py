"""Survival probe: Cox model on slide embeddings, out-of-fold risk, C-index, KM risk groups.

Model: StandardScaler → PCA(p) → CoxPHSurvivalAnalysis(alpha=ridge). Embeddings have hundreds of
dimensions and cohorts tens to hundreds of events, so a Cox fit on raw embeddings is ill-posed
(it separates and the coefficients diverge). PCA caps the number of covariates at what the events
can support (p = events/10, the "10 events per variable" rule, between 1 and 10), and the small
ridge penalty keeps Newton–Raphson finite on the rest. Both steps are deterministic and need no
inner search (Coxnet would need an alpha path and inner CV, slower and less stable on small
cohorts). The whole pipeline stays linear in the embedding, so a serving head is one dot product.
Folds are stratified by event at case level; C-index = Harrell's on the pooled out-of-fold risk.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cscl.errors import TooFewCases
from cscl.eval._threads import one_blas_thread
from cscl.eval.bootstrap import bootstrap_cindex, summarize


def n_components_for(n_events: int, n_samples: int, n_features: int, cap: int = 10) -> int:
    """Covariates the events can support: events/10, in [1, cap], below samples and features."""
    return int(max(1, min(cap, n_events // 10, n_samples - 1, n_features)))


def make_cox(
    n_events: int, n_samples: int, n_features: int, n_components: int | None, alpha: float
) -> Pipeline:
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    p = n_components or n_components_for(n_events, n_samples, n_features)
    p = int(min(p, n_samples - 1, n_features))
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("pca", PCA(n_components=p, svd_solver="full")),
            ("cox", CoxPHSurvivalAnalysis(alpha=alpha, ties="breslow")),
        ]
    )


def surv_y(time: np.ndarray, event: np.ndarray):
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event, bool), time=np.asarray(time, float))


def fit_cox(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    n_components: int | None = None,
    alpha: float = 1.0,
) -> Pipeline:
    """Fit the survival probe on all given cases."""
    model = make_cox(int(np.sum(event)), len(X), X.shape[1], n_components, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sksurv warns on slow convergence; the ridge bounds it
        model.fit(X, surv_y(time, event))
    return model


@dataclass
class SurvivalResult:
    cindex: dict  # {value, ci_low, ci_high, n_boot}
    per_fold: list[dict]
    predictions: pd.DataFrame  # case_id, fold, time, event, risk, risk_group
    boot: np.ndarray
    logrank: dict  # chisq, p_value, groups {high/low: n}
    n_components: int
    notes: list[str] = field(default_factory=list)


def risk_groups(risk: np.ndarray) -> np.ndarray:
    """'high' above the median out-of-fold risk, 'low' otherwise."""
    return np.where(risk > np.median(risk), "high", "low")


def logrank(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> dict:
    """Log-rank test between risk groups (sksurv.compare.compare_survival)."""
    from sksurv.compare import compare_survival

    counts = {str(g): int((groups == g).sum()) for g in np.unique(groups)}
    if len(counts) < 2:
        return {"chisq": None, "p_value": None, "groups": counts, "note": "one risk group only"}
    chisq, p = compare_survival(surv_y(time, event), groups)
    return {"chisq": float(chisq), "p_value": float(p), "groups": counts}


@one_blas_thread
def survival_eval(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    case_ids: Sequence[str] | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    n_components: int | None = None,
    alpha: float = 1.0,
    n_boot: int = 1000,
    boot_seed: int = 42,
    task: str = "os",
) -> SurvivalResult:
    """Out-of-fold Cox risk over `folds` event-stratified case folds; C-index with bootstrap CI."""
    from sksurv.metrics import concordance_index_censored

    X = np.asarray(X, dtype=np.float64)
    time = np.asarray(time, float)
    event = np.asarray(event, bool)
    n_ev = int(event.sum())
    if n_ev < folds or len(event) < 2 * folds:
        raise TooFewCases(
            f"survival task {task!r}: {n_ev} events and {len(event) - n_ev} censored cases "
            f"cannot fill {folds} folds",
            hint="lower --folds or add cases",
        )
    strat = event.astype(int) if (~event).sum() >= folds else np.zeros(len(event), int)
    ids = np.asarray(case_ids if case_ids is not None else np.arange(len(time))).astype(str)
    risk = np.zeros(len(time))
    fold_of = np.zeros(len(time), int)
    per_fold, notes = [], []
    p_used = set()
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for f, (tr, te) in enumerate(cv.split(X, strat)):
        model = fit_cox(X[tr], time[tr], event[tr], n_components, alpha)
        p_used.add(int(model.named_steps["pca"].n_components_))
        risk[te] = model.predict(X[te])
        fold_of[te] = f
        row = {"fold": f, "n_test": int(len(te)), "n_events": int(event[te].sum())}
        if event[te].any():
            with contextlib.suppress(ValueError):  # no comparable pair in this fold
                row["cindex"] = float(concordance_index_censored(event[te], time[te], risk[te])[0])
        per_fold.append(row)
    point = concordance_index_censored(event, time, risk)[0]
    boot = bootstrap_cindex(time, event, risk, n_boot=n_boot, seed=boot_seed)
    groups = risk_groups(risk)
    preds = pd.DataFrame(
        {
            "case_id": ids,
            "fold": fold_of,
            "time": time,
            "event": event.astype(int),
            "risk": risk,
            "risk_group": groups,
        }
    )
    notes.append(
        "risk scores of different folds come from different models; the pooled C-index "
        "compares them as one ranking (per-fold values are listed too)"
    )
    return SurvivalResult(
        cindex=summarize(point, boot),
        per_fold=per_fold,
        predictions=preds,
        boot=boot,
        logrank=logrank(time, event, groups),
        n_components=max(p_used),
        notes=notes,
    )
