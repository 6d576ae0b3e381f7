"""Few-shot linear probe (MADELEINE protocol).

Logistic regression (C=1, no scaling by default, as in the paper) trained on k examples per
class, repeated over `draws` seeded draws; the test set is every remaining case. AUC (binary, or
macro one-vs-rest) and balanced accuracy, mean ± std over draws. A k is skipped, with the reason
in the output, when a class has <= k examples (no test case of that class would remain).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cscl.eval._threads import one_blas_thread
from cscl.eval.bootstrap import auc_score
from cscl.eval.tasks import drop_missing, encode_labels


def _draw_rng(seed: int, k: int, draw: int) -> np.random.Generator:
    """One generator per (seed, k, draw): results for a k do not depend on the other ks asked."""
    return np.random.default_rng([seed, k, draw])


@one_blas_thread
def few_shot(
    X: np.ndarray,
    y: Sequence,
    ks: Sequence[int] = (1, 5, 10, 25),
    draws: int = 10,
    seed: int = 0,
    *,
    C: float = 1.0,
    scale: bool = False,
    max_iter: int = 10_000,
) -> pd.DataFrame:
    """One row per k: k, status ('ok'/'skipped'), reason, draws, n_missing_labels (rows with no
    label, dropped), n_train, n_test, auc_mean, auc_std,
    balanced_accuracy_mean, balanced_accuracy_std, and the per-draw lists `auc_draws`,
    `balanced_accuracy_draws` (paired across methods: same y and seed → same draws)."""
    if len(X) != len(y):
        raise ValueError(f"{len(X)} embeddings but {len(y)} labels")
    y, X, n_missing = drop_missing(y, X)
    X = np.asarray(X, dtype=np.float64)
    classes, y_idx = encode_labels(y)
    by_class = [np.flatnonzero(y_idx == c) for c in range(len(classes))]
    smallest = min(len(m) for m in by_class)
    rows = []
    for k in ks:
        row: dict = {"k": int(k), "status": "ok", "reason": "", "draws": int(draws)}
        row["n_missing_labels"] = n_missing
        if len(classes) < 2:
            row.update(status="skipped", reason=f"only one class {classes.tolist()}")
        elif smallest <= k:
            small = classes[int(np.argmin([len(m) for m in by_class]))]
            row.update(
                status="skipped",
                reason=f"class {str(small)!r} has {smallest} case(s) <= k={k}; no test case would remain",
            )
        if row["status"] == "skipped":
            rows.append(row)
            continue
        aucs, baccs = [], []
        for d in range(draws):
            rng = _draw_rng(seed, int(k), d)
            train = np.concatenate([rng.choice(m, size=k, replace=False) for m in by_class])
            test = np.setdiff1d(np.arange(len(y)), train)
            lr = LogisticRegression(C=C, max_iter=max_iter)
            model = make_pipeline(StandardScaler(), lr) if scale else lr
            model.fit(X[train], y_idx[train])
            proba = model.predict_proba(X[test])
            aucs.append(auc_score(y_idx[test], proba))
            baccs.append(float(balanced_accuracy_score(y_idx[test], proba.argmax(axis=1))))
        row.update(
            n_train=int(k * len(classes)),
            n_test=int(len(y) - k * len(classes)),
            auc_mean=float(np.mean(aucs)),
            auc_std=float(np.std(aucs)),
            balanced_accuracy_mean=float(np.mean(baccs)),
            balanced_accuracy_std=float(np.std(baccs)),
            auc_draws=aucs,
            balanced_accuracy_draws=baccs,
        )
        rows.append(row)
    cols = [
        "k",
        "status",
        "reason",
        "draws",
        "n_missing_labels",
        "n_train",
        "n_test",
        "auc_mean",
        "auc_std",
        "balanced_accuracy_mean",
        "balanced_accuracy_std",
        "auc_draws",
        "balanced_accuracy_draws",
    ]
    return pd.DataFrame(rows).reindex(columns=cols)
