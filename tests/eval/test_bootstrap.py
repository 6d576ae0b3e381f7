import numpy as np
import pytest
from sksurv.metrics import concordance_index_censored

from cscl.eval.bootstrap import (
    bootstrap_cindex,
    bootstrap_classification,
    classification_metrics,
    fast_classification_metrics,
    resample_indices,
    summarize,
    wilcoxon_greater,
)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_fast_metrics_equal_sklearn_on_every_resample(k):
    rng = np.random.default_rng(k)
    n = 40
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k), n)
    proba[:5] = proba[5:10]  # ties in scores
    idx = resample_indices(n, 12, seed=1)
    fast = fast_classification_metrics(y[idx], proba[idx])
    checked = 0
    for b, sel in enumerate(idx):
        if len(np.unique(y[sel])) < k:
            assert all(np.isnan(fast[m][b]) for m in fast)
            continue
        ref = classification_metrics(y[sel], proba[sel])
        for m, v in ref.items():
            assert fast[m][b] == pytest.approx(v, abs=1e-12), m
        checked += 1
    assert checked > 6


def test_bootstrap_classification_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    p = rng.dirichlet([1, 1], 30)
    a = bootstrap_classification(y, p, n_boot=100, seed=42)
    b = bootstrap_classification(y, p, n_boot=100, seed=42)
    c = bootstrap_classification(y, p, n_boot=100, seed=7)
    assert np.array_equal(a["auc"], b["auc"], equal_nan=True)
    assert not np.array_equal(a["auc"], c["auc"], equal_nan=True)


def test_bootstrap_cindex_equals_sksurv_with_ties():
    rng = np.random.default_rng(1)
    n = 50
    t = rng.integers(1, 15, n).astype(float)  # many tied times
    e = rng.random(n) < 0.6
    r = np.round(rng.normal(size=n), 1)  # tied risks
    boot = bootstrap_cindex(t, e, r, n_boot=100, seed=3)
    for b, sel in enumerate(resample_indices(n, 100, 3)):
        ref = concordance_index_censored(e[sel], t[sel], r[sel])[0]
        assert boot[b] == pytest.approx(ref, abs=1e-12)


def test_summarize_percentiles_and_skips():
    boot = np.r_[np.linspace(0, 1, 101), np.nan]
    s = summarize(0.5, boot)
    assert s["ci_low"] == pytest.approx(0.025) and s["ci_high"] == pytest.approx(0.975)
    assert s["n_boot"] == 101 and s["n_boot_skipped"] == 1


def test_wilcoxon_greater_direction():
    rng = np.random.default_rng(0)
    base = rng.normal(0.6, 0.05, 200)
    assert wilcoxon_greater(base + 0.05, base)["p_value"] < 1e-6
    assert wilcoxon_greater(base - 0.05, base)["p_value"] > 0.99
    assert wilcoxon_greater(base, base)["p_value"] == 1.0
    assert wilcoxon_greater(np.r_[base, np.nan], np.r_[base, 1.0])["n_pairs"] == 200
