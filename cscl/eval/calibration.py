"""Calibrated probabilities of a binary probe: Platt scaling, cross-fitted, and how to judge it.

Why calibrate: the k-fold probe uses `class_weight="balanced"`, which moves every probability
towards the minority class (a probe trained as if both classes were equally common), so its raw
probabilities do not mean "P(positive)". A triage decision ("skip the stain when P < t") needs
probabilities that do.

Why Platt (a logistic map on the probe's logit, 2 parameters) and not isotonic regression: cohorts
are a few hundred cases, where isotonic steps overfit (scikit-learn advises against it below ~1,000
calibration cases); Platt is monotone, so it keeps the ranking (AUC unchanged), and it is two
numbers in heads.json, applied with numpy at serving time. Targets are Platt's smoothed labels
((N₊+1)/(N₊+2), 1/(N₋+2)), as in scikit-learn's `CalibratedClassifierCV(method="sigmoid")`, so a
perfectly separated fold gives a steep but finite map.

Why cross-fitted: the map of the cases in outer fold f is fitted on the out-of-fold predictions of
the other folds only, so every calibrated probability is out of fold (the cases it is judged on
never set their own map). At packaging time the map is fitted on all out-of-fold predictions and
applied to the final head (`CalibratedClassifierCV(ensemble=False)`'s scheme).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

LOGIT_CLIP = 30.0  # |logit| cap: p = 1 - 1e-13 is as sure as a probe ever needs to be


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), finite even for p = 0 or 1."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        z = np.log(p) - np.log1p(-p)
    return np.clip(z, -LOGIT_CLIP, LOGIT_CLIP)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class PlattMap:
    """p_calibrated = sigmoid(a · logit(p_raw) + b)."""

    a: float
    b: float

    def __call__(self, p_raw: np.ndarray) -> np.ndarray:
        return sigmoid(self.a * logit(p_raw) + self.b)

    def as_dict(self) -> dict:
        return {"method": "platt", "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict) -> PlattMap:
        return cls(float(d["a"]), float(d["b"]))


def fit_platt(p_raw: np.ndarray, positive: np.ndarray) -> PlattMap:
    """Fit (a, b) by maximum likelihood on Platt's smoothed targets."""
    z = logit(p_raw)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    t = np.where(pos, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        s = ab[0] * z + ab[1]
        # -[t log σ(s) + (1-t) log(1-σ(s))] = log(1 + e^s) - t s, written without overflow
        nll = np.logaddexp(0.0, s) - t * s
        r = sigmoid(s) - t
        return float(nll.sum()), np.array([float(r @ z), float(r.sum())])

    start = np.array([1.0, 0.0])
    res = minimize(loss, start, jac=True, method="L-BFGS-B")
    return PlattMap(float(res.x[0]), float(res.x[1]))


def cross_fitted(p_raw: np.ndarray, positive: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold calibrated probabilities: each fold's cases through the map fitted on the
    other folds (a single fold, or folds lacking a class, fall back to one map on all cases)."""
    p_raw = np.asarray(p_raw, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    folds = np.asarray(folds)
    out = np.empty_like(p_raw)
    uniq = np.unique(folds)
    for f in uniq:
        rest = folds != f
        if len(uniq) < 2 or pos[rest].all() or not pos[rest].any():
            return fit_platt(p_raw, pos)(p_raw)
        out[~rest] = fit_platt(p_raw[rest], pos[rest])(p_raw[~rest])
    return out


def brier(p: np.ndarray, positive: np.ndarray) -> float:
    """Mean squared difference between the probability and the outcome (0 = perfect)."""
    return float(np.mean((np.asarray(p, float) - np.asarray(positive, float)) ** 2))


def brier_rows(p: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Brier score of each row of (B, n) arrays (bootstrap resamples)."""
    return np.mean((np.asarray(p, float) - np.asarray(positive, float)) ** 2, axis=1)


def reliability(p: np.ndarray, positive: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability curve on equal-width bins of [0, 1]: per non-empty bin the mean predicted
    probability, the observed fraction of positives and the case count; plus the expected
    calibration error (ECE: |predicted − observed| weighted by bin size)."""
    p = np.asarray(p, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    mean_p, observed, counts = [], [], []
    ece = 0.0
    for b in range(n_bins):
        sel = which == b
        if not sel.any():
            continue
        mp, ob = float(p[sel].mean()), float(pos[sel].mean())
        mean_p.append(mp)
        observed.append(ob)
        counts.append(int(sel.sum()))
        ece += sel.sum() / len(p) * abs(mp - ob)
    return {
        "bin_edges": edges.tolist(),
        "mean_predicted": mean_p,
        "observed_fraction": observed,
        "n": counts,
        "ece": float(ece),
    }
