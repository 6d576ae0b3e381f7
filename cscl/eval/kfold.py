"""k-fold linear probe with pooled out-of-fold predictions (HistoStainAlign protocol).

StandardScaler + LogisticRegression(class_weight='balanced'); C by randomized search over
logspace(-3, 2) (inner stratified folds, scoring average precision — macro one-vs-rest AP for
multi-class); outer stratified folds at case level (StratifiedGroupKFold when several rows share
a case); predictions of all outer folds pooled, metrics on the pool, 95 % CI from the percentile
bootstrap of the pool (seed 42 by default).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, roc_curve
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cscl.errors import InputError, TooFewCases
from cscl.eval._threads import one_blas_thread
from cscl.eval.bootstrap import (
    CLASS_METRICS,
    bootstrap_classification,
    classification_metrics,
    fast_classification_metrics,
    summarize,
)
from cscl.eval.tasks import drop_missing, encode_labels

C_GRID = np.logspace(-3, 2, 50)


@dataclass
class KFoldResult:
    classes: list[str]
    metrics: dict  # name -> {value, ci_low, ci_high, n_boot}
    per_fold: list[dict]  # metrics of each outer fold + chosen C
    predictions: pd.DataFrame  # case_id, fold, y_true, y_pred, prob_<class>
    boot: dict[str, np.ndarray]  # per-resample values (paired across methods)
    roc: dict | None = None  # binary: fpr, tpr, threshold (positive = classes[1])
    confusion: dict = field(default_factory=dict)  # categories, matrix (rows = true)
    notes: list[str] = field(default_factory=list)


def _pipe(C: float, max_iter: int) -> Pipeline:
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("lr", LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter)),
        ]
    )


def average_precision(y_idx: np.ndarray, scores: np.ndarray) -> float:
    """sklearn's `average_precision` scorer on decision scores: binary AP of the positive class,
    macro one-vs-rest AP for more classes (ties grouped as in precision_recall_curve)."""
    if scores.ndim == 1:
        return _ap(y_idx == 1, scores)
    return float(np.mean([_ap(y_idx == k, scores[:, k]) for k in range(scores.shape[1])]))


def _ap(pos: np.ndarray, s: np.ndarray) -> float:
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(pos)[last]
    if tps[-1] == 0:
        return 0.0
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


class CSearch:
    """Randomized search of C (HistoStainAlign): `n_iter` values drawn from logspace(-3, 2)
    without replacement, inner stratified folds, mean average precision, refit on all.

    The same protocol as RandomizedSearchCV(Pipeline(scaler, LR)) — scaler fitted inside each
    inner fold — written as a plain loop with numpy scoring: 3–4× less overhead per fit, which
    is most of the k-fold cost on cohorts of a few hundred cases.
    """

    def __init__(self, n_iter: int, inner_folds: int, seed: int, max_iter: int = 5000):
        self.n_iter, self.inner_folds, self.seed, self.max_iter = (
            n_iter,
            inner_folds,
            seed,
            max_iter,
        )

    def candidates(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(C_GRID), size=min(self.n_iter, len(C_GRID)), replace=False)
        return C_GRID[np.sort(pick)]

    def fit(self, X: np.ndarray, y: np.ndarray) -> CSearch:
        cands = self.candidates()
        cv = StratifiedKFold(self.inner_folds, shuffle=True, random_state=self.seed)
        scores = np.zeros((len(cv_splits := list(cv.split(X, y))), len(cands)))
        for f, (tr, va) in enumerate(cv_splits):
            mu, sd = X[tr].mean(axis=0), X[tr].std(axis=0)
            sd[sd == 0] = 1.0
            Xtr, Xva = (X[tr] - mu) / sd, (X[va] - mu) / sd
            for j, C in enumerate(cands):
                lr = LogisticRegression(C=C, class_weight="balanced", max_iter=self.max_iter)
                lr.fit(Xtr, y[tr])
                z = Xva @ lr.coef_.T + lr.intercept_
                scores[f, j] = average_precision(y[va], z[:, 0] if z.shape[1] == 1 else z)
        self.cv_scores_ = scores.mean(axis=0)
        self.candidates_ = cands
        self.best_C_ = float(cands[int(np.argmax(self.cv_scores_))])  # ties → smallest C
        self.best_estimator_ = _pipe(self.best_C_, self.max_iter).fit(X, y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.best_estimator_.predict_proba(X)


def make_probe(
    y_train: np.ndarray, n_iter: int, inner_folds: int, seed: int, max_iter: int = 5000
) -> tuple[object, str | None]:
    """The probe for one training set: a randomized search over C, or a fixed C=1 when a class
    is too small for inner folds (the note says so)."""
    smallest = int(np.bincount(y_train).min())
    inner = min(inner_folds, smallest)
    if inner < 2 or n_iter < 1:
        return _pipe(
            1.0, max_iter
        ), f"C fixed at 1 (smallest class has {smallest} training case(s))"
    note = None if inner == inner_folds else f"inner folds reduced to {inner} (small class)"
    return CSearch(n_iter, inner, seed, max_iter), note


def chosen_c(model) -> float:
    est = getattr(model, "best_estimator_", model)
    return float(est.named_steps["lr"].C)


def outer_splits(
    y_idx: np.ndarray, groups: np.ndarray | None, folds: int, seed: int, task: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified outer folds; whole cases stay in one fold. Too few cases is an error."""
    counts = np.bincount(y_idx)
    if groups is not None and len(np.unique(groups)) < len(groups):
        n_groups = [len(np.unique(groups[y_idx == c])) for c in range(len(counts))]
        if min(n_groups) < folds:
            raise TooFewCases(
                f"task {task!r}: a class has {min(n_groups)} case(s), fewer than {folds} folds",
                hint="lower --folds or add cases",
            )
        cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        return list(cv.split(np.zeros(len(y_idx)), y_idx, groups))
    if counts.min() < folds:
        raise TooFewCases(
            f"task {task!r}: a class has {int(counts.min())} case(s), fewer than {folds} folds",
            hint="lower --folds or add cases",
        )
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y_idx)), y_idx))


@one_blas_thread
def kfold_eval(
    X: np.ndarray,
    y: Sequence,
    case_ids: Sequence[str] | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    n_iter: int = 10,
    inner_folds: int = 5,
    n_boot: int = 1000,
    boot_seed: int = 42,
    task: str = "task",
) -> KFoldResult:
    """Outer-fold probe with pooled predictions; see the module docstring for the protocol."""
    if len(X) != len(y):
        raise ValueError(f"{len(X)} embeddings but {len(y)} labels")
    y, X, case_ids, n_missing = drop_missing(y, X, case_ids)
    X = np.asarray(X, dtype=np.float64)
    classes, y_idx = encode_labels(y)
    if len(classes) < 2:
        raise InputError(f"task {task!r} has only one class {classes.tolist()}")
    ids = np.asarray(case_ids if case_ids is not None else np.arange(len(y))).astype(str)
    groups = ids if case_ids is not None else None
    proba = np.zeros((len(y), len(classes)))
    fold_of = np.zeros(len(y), dtype=int)
    per_fold, notes = [], []
    if n_missing:
        notes.append(f"{n_missing} case(s) without a label dropped")
    for f, (tr, te) in enumerate(outer_splits(y_idx, groups, folds, seed, task)):
        model, note = make_probe(y_idx[tr], n_iter, inner_folds, seed)
        if note and note not in notes:
            notes.append(note)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X[tr], y_idx[tr])
        proba[te] = model.predict_proba(X[te])
        fold_of[te] = f
        fold_metrics = {"fold": f, "n_test": int(len(te)), "C": chosen_c(model)}
        if len(np.unique(y_idx[te])) == len(classes):  # numpy metrics, tested equal to sklearn
            fast = fast_classification_metrics(y_idx[te][None], proba[te][None])
            fold_metrics.update({m: float(v[0]) for m, v in fast.items()})
        per_fold.append(fold_metrics)
    point = classification_metrics(y_idx, proba)
    boot = bootstrap_classification(y_idx, proba, n_boot=n_boot, seed=boot_seed)
    metrics = {m: summarize(point[m], boot[m]) for m in CLASS_METRICS}
    pred_idx = proba.argmax(axis=1)
    preds = pd.DataFrame(
        {"case_id": ids, "fold": fold_of, "y_true": y, "y_pred": classes[pred_idx]}
    )
    for c, name in enumerate(classes):
        preds[f"prob_{name}"] = proba[:, c]
    cm = confusion_matrix(y_idx, pred_idx, labels=range(len(classes)))
    roc = None
    if len(classes) == 2:
        fpr, tpr, thr = roc_curve(y_idx == 1, proba[:, 1])
        roc = {
            "positive_class": str(classes[1]),
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "threshold": np.minimum(thr, 1.0).tolist(),  # sklearn's first threshold is inf
        }
    return KFoldResult(
        classes=classes.tolist(),
        metrics=metrics,
        per_fold=per_fold,
        predictions=preds,
        boot=boot,
        roc=roc,
        confusion={"categories": classes.tolist(), "matrix": cm.tolist()},
        notes=notes,
    )
