"""Metrics of pooled predictions and their percentile-bootstrap confidence intervals.

Point estimates come from scikit-learn / scikit-survival directly. The bootstrap recomputes the
same metrics on 1,000 resamples, so it uses vectorised numpy versions (confusion matrices by
bincount, AUC by Mann–Whitney ranks) that tests check against scikit-learn; a loop over sklearn
calls would cost seconds per task. Resample indices depend only on (seed, n), so two methods
evaluated on the same cases get paired resamples (for the Wilcoxon test).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, wilcoxon
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

CLASS_METRICS = ("auc", "balanced_accuracy", "f1_weighted", "precision_macro", "recall_macro")


def auc_score(y_idx: np.ndarray, proba: np.ndarray) -> float:
    """AUC: binary on the positive (second) class; macro one-vs-rest for more classes."""
    if proba.shape[1] == 2:
        return float(roc_auc_score(y_idx == 1, proba[:, 1]))
    return float(
        roc_auc_score(
            y_idx, proba, multi_class="ovr", average="macro", labels=range(proba.shape[1])
        )
    )


def classification_metrics(y_idx: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """All k-fold metrics with scikit-learn; predicted class = argmax probability."""
    pred = proba.argmax(axis=1)
    labels = list(range(proba.shape[1]))
    return {
        "auc": auc_score(y_idx, proba),
        "balanced_accuracy": float(balanced_accuracy_score(y_idx, pred)),
        "f1_weighted": float(
            f1_score(y_idx, pred, average="weighted", labels=labels, zero_division=0)
        ),
        "precision_macro": float(
            precision_score(y_idx, pred, average="macro", labels=labels, zero_division=0)
        ),
        "recall_macro": float(
            recall_score(y_idx, pred, average="macro", labels=labels, zero_division=0)
        ),
    }


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement; depends only on (n, n_boot, seed)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _auc_rows(pos: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise Mann–Whitney AUC (ties count one half), NaN where a row has one class only."""
    ranks = rankdata(scores, axis=1)
    n_pos = pos.sum(axis=1)
    n_neg = pos.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def fast_classification_metrics(y_idx: np.ndarray, proba: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised metrics for a batch of resamples: y_idx (B, n) ints, proba (B, n, K).

    A resample lacking a class in y_true gets NaN everywhere (its AUC is undefined).
    """
    B, n, K = proba.shape
    pred = proba.argmax(axis=2)
    flat = (np.arange(B)[:, None] * K * K + y_idx * K + pred).ravel()
    cm = np.bincount(flat, minlength=B * K * K).reshape(B, K, K).astype(float)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    if K == 2:
        auc = _auc_rows(y_idx == 1, proba[:, :, 1])
    else:
        auc = np.mean([_auc_rows(y_idx == k, proba[:, :, k]) for k in range(K)], axis=0)
    out = {
        "auc": auc,
        "balanced_accuracy": recall.mean(axis=1),
        "f1_weighted": (f1 * support).sum(axis=1) / n,
        "precision_macro": precision.mean(axis=1),
        "recall_macro": recall.mean(axis=1),
    }
    incomplete = (support == 0).any(axis=1)
    for v in out.values():
        v[incomplete] = np.nan
    return out


def bootstrap_classification(
    y_idx: np.ndarray, proba: np.ndarray, n_boot: int = 1000, seed: int = 42, chunk: int = 200
) -> dict[str, np.ndarray]:
    """Metric values of `n_boot` resamples of the pooled predictions (NaN: resample skipped)."""
    idx = resample_indices(len(y_idx), n_boot, seed)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in CLASS_METRICS}
    for start in range(0, n_boot, chunk):
        sel = idx[start : start + chunk]
        res = fast_classification_metrics(y_idx[sel], proba[sel])
        for m in CLASS_METRICS:
            parts[m].append(res[m])
    return {m: np.concatenate(v) if v else np.zeros(0) for m, v in parts.items()}


def _pair_matrices(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, tied_tol: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """Harrell's pairs as scikit-survival defines them: an event i is comparable with j when
    t_j > t_i, or t_j == t_i and j is censored; concordant when risk_i > risk_j, a risk tie
    (|diff| <= tied_tol) counts one half. Returns (comparable, comparable * credit)."""
    t_i, t_j = time[:, None], time[None, :]
    comp = event[:, None] & ((t_j > t_i) | ((t_j == t_i) & ~event[None, :]))
    diff = risk[:, None] - risk[None, :]
    credit = np.where(np.abs(diff) <= tied_tol, 0.5, (diff > 0).astype(float))
    return comp.astype(float), comp * credit


def bootstrap_cindex(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, n_boot: int = 1000, seed: int = 42
) -> np.ndarray:
    """Harrell's C of each resample (NaN where a resample has no comparable pair).

    A resample is a vector of case multiplicities w, so C = wᵀ(P∘credit)w / wᵀPw on the
    pair matrices of the original cases (copies of one case are never comparable with each
    other, as in scikit-survival): one matrix product instead of 1,000 sksurv calls.
    """
    time = np.asarray(time, float)
    event = np.asarray(event, bool)
    risk = np.asarray(risk, float)
    comp, conc = _pair_matrices(time, event, risk)
    idx = resample_indices(len(time), n_boot, seed)
    out = np.empty(n_boot)
    n = len(time)
    for start in range(0, n_boot, 100):
        sel = idx[start : start + 100]
        rows = np.repeat(np.arange(len(sel)), n)
        W = np.zeros((len(sel), n))
        np.add.at(W, (rows, sel.ravel()), 1.0)
        num = ((W @ conc) * W).sum(axis=1)
        den = ((W @ comp) * W).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + len(sel)] = np.where(den > 0, num / den, np.nan)
    return out


def summarize(point: float, boot: np.ndarray, level: float = 0.95) -> dict:
    """{value, ci_low, ci_high, n_boot}: percentile interval of the valid resamples."""
    valid = boot[np.isfinite(boot)]
    out = {"value": float(point), "ci_low": None, "ci_high": None, "n_boot": int(len(valid))}
    if len(valid):
        a = (1 - level) / 2 * 100
        out["ci_low"], out["ci_high"] = (float(v) for v in np.percentile(valid, [a, 100 - a]))
    if len(valid) < len(boot):
        out["n_boot_skipped"] = int(len(boot) - len(valid))
    return out


def wilcoxon_greater(method: np.ndarray, baseline: np.ndarray) -> dict:
    """One-sided Wilcoxon signed-rank test that `method` scores exceed paired `baseline` scores.

    Pairs with a NaN on either side are dropped; all-equal pairs give p = 1 (no evidence).
    """
    a, b = np.asarray(method, float), np.asarray(baseline, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    out = {
        "n_pairs": int(len(a)),
        "mean_difference": float(np.mean(a - b)) if len(a) else None,
        "statistic": None,
        "p_value": None,
    }
    if len(a) == 0:
        return out
    if np.allclose(a, b):
        out["p_value"] = 1.0
        return out
    res = wilcoxon(a, b, alternative="greater")
    out["statistic"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out
