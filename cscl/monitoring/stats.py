"""The drift statistics, in numpy/scipy/sklearn: per-column two-sample tests and the domain
classifier's ROC-AUC for embeddings.

Why our own code: the verdict is the library's job and must not need the optional Evidently
stack (the `monitoring` extra renders the HTML report only). Each function computes exactly what
Evidently 0.7's stat test of the same name computes (same scipy call, same binning, same seeds),
so drift.json and the Evidently report show the same numbers; tests/monitoring/test_stats.py
checks every method against Evidently.

Columns: `column_test(method, ref, cur, categorical)` → a p-value ("p" methods: reject when
below the threshold) or a distance ("d" methods: drift when at or above it); which is which is
`NUM_METHODS` / `CAT_METHODS` in `cscl.monitoring.policy`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

# Evidently's ModelDriftMethod: a 50/50 split and a logistic SGD classifier, both seeded with 42.
SPLIT_SEED = 42


def split_counts(n_ref: int, n_cur: int) -> tuple[int, int, int, int]:
    """(reference, current) rows in the domain classifier's train half, then its held-out half.

    The split is `train_test_split(test_size=0.5, random_state=42)` of reference rows labelled 1
    followed by current rows labelled 0, as in `domain_classifier_auc`.
    """
    y = np.r_[np.ones(n_ref, dtype=int), np.zeros(n_cur, dtype=int)]
    y_train, y_test = train_test_split(y, test_size=0.5, random_state=SPLIT_SEED, shuffle=True)
    return (
        int(y_train.sum()),
        int(len(y_train) - y_train.sum()),
        int(y_test.sum()),
        int(len(y_test) - y_test.sum()),
    )


def domain_classifier_auc(reference: np.ndarray, current: np.ndarray) -> float:
    """Held-out ROC-AUC of a classifier telling reference rows (1) from current rows (0).

    0.5 = indistinguishable. Same data order, split and classifier as Evidently's
    `embedding_drift_methods.model(bootstrap=False)`.
    """
    X = np.concatenate([np.asarray(reference), np.asarray(current)])
    y = np.r_[np.ones(len(reference), dtype=int), np.zeros(len(current), dtype=int)]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, random_state=SPLIT_SEED, shuffle=True
    )
    clf = SGDClassifier(loss="log_loss", random_state=SPLIT_SEED)
    clf.fit(X_train, y_train)
    return float(roc_auc_score(y_test, clf.predict_proba(X_test)[:, 1]))


def _category_shares(ref: pd.Series, cur: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Counts of every value seen on either side (0 where a side lacks it)."""
    keys = list(set(ref.dropna().unique()) | set(cur.dropna().unique()))
    r, c = ref.value_counts(), cur.value_counts()
    return (
        np.array([r.get(k, 0) for k in keys], dtype=float),
        np.array([c.get(k, 0) for k in keys], dtype=float),
    )


def _binned_shares(
    ref: pd.Series, cur: pd.Series, categorical: bool, fill_zeros: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Shares per bin: Sturges histogram bins of both sides for numbers with > 20 distinct
    reference values, else shares per value; empty bins get a tiny share (PSI's logarithm)."""
    if not categorical and ref.nunique() > 20:
        bins = np.histogram_bin_edges(np.asarray(pd.concat([ref, cur]).values), bins="sturges")
        rp = np.histogram(ref, bins)[0] / len(ref)
        cp = np.histogram(cur, bins)[0] / len(cur)
    else:
        rc, cc = _category_shares(ref, cur)
        rp, cp = rc / len(ref), cc / len(cur)
    if fill_zeros:
        for p in (rp, cp):
            smallest = p[p != 0].min()
            np.place(p, p == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return rp, cp


def _ks(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    return float(stats.ks_2samp(ref, cur)[1])


def _mannw(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    return float(stats.mannwhitneyu(x=ref, y=cur, alternative="less")[1])


def _wasserstein(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    """First Wasserstein distance in units of the reference's standard deviation."""
    return float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))


def _chisquare(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    """Current counts against reference counts scaled to the current sample size."""
    rc, cc = _category_shares(ref, cur)
    with np.errstate(divide="ignore"):  # a value the reference never had: p = 0, as meant
        return float(stats.chisquare(list(cc), list(rc * (len(cur) / len(ref))))[1])


def _z(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    """Two-proportion z-test on the share of the first (sorted) category."""
    if ref.nunique() == 1 and cur.nunique() == 1 and ref.unique()[0] == cur.unique()[0]:
        return 1.0
    first = sorted(set(ref.dropna().unique()) | set(cur.dropna().unique()))[0]
    a = ref.apply(lambda x: 0 if x == first else 1)
    b = cur.apply(lambda x: 0 if x == first else 1)
    n1, n2 = len(a), len(b)
    p1, p2 = float(sum(a)) / n1, float(sum(b)) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _psi(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    rp, cp = _binned_shares(ref, cur, categorical, fill_zeros=True)
    return float(np.sum((rp - cp) * np.log(rp / cp)))


def _jensenshannon(ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    rp, cp = _binned_shares(ref, cur, categorical, fill_zeros=False)
    return float(distance.jensenshannon(rp, cp, None))


NUMERIC_TESTS: dict[str, Callable[[pd.Series, pd.Series, bool], float]] = {
    "ks": _ks,
    "wasserstein": _wasserstein,
    "psi": _psi,
    "jensenshannon": _jensenshannon,
    "mannw": _mannw,
}
CATEGORICAL_TESTS: dict[str, Callable[[pd.Series, pd.Series, bool], float]] = {
    "chisquare": _chisquare,
    "z": _z,
    "jensenshannon": _jensenshannon,
    "psi": _psi,
}


def column_test(method: str, ref: pd.Series, cur: pd.Series, categorical: bool) -> float:
    """The drift score of one column: p-value or distance (see module docstring).

    Missing and infinite values are dropped first, as Evidently does.
    """
    tests = CATEGORICAL_TESTS if categorical else NUMERIC_TESTS
    if method not in tests:
        kind = "categorical" if categorical else "numeric"
        raise ValueError(f"no {kind} drift test named {method!r} (known: {sorted(tests)})")
    r = ref.replace([-np.inf, np.inf], np.nan).dropna()
    c = cur.replace([-np.inf, np.inf], np.nan).dropna()
    return tests[method](r, c, categorical)
