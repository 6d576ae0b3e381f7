import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cscl.eval.fewshot import _draw_rng, few_shot


def test_signal_high_noise_near_chance(data):
    labels, X, N = data
    y = labels["er_status"].to_numpy()
    sig = few_shot(X, y, ks=(1, 10), draws=3).set_index("k")
    noise = few_shot(N, y, ks=(1, 10), draws=3).set_index("k")
    assert sig.loc[10, "auc_mean"] > 0.9
    assert 0.3 < noise.loc[10, "auc_mean"] < 0.7
    assert sig.loc[10, "auc_mean"] >= sig.loc[1, "auc_mean"] - 0.05
    assert sig.loc[10, "n_train"] == 20 and sig.loc[10, "n_test"] == 40
    assert len(sig.loc[10, "auc_draws"]) == 3


def test_draw_matches_direct_sklearn(data):
    labels, X, _ = data
    y = labels["er_status"].to_numpy()
    res = few_shot(X, y, ks=(5,), draws=2, seed=3)
    yi = (y == "positive").astype(int)
    rng = _draw_rng(3, 5, 1)
    train = np.concatenate([rng.choice(np.flatnonzero(yi == c), 5, replace=False) for c in (0, 1)])
    test = np.setdiff1d(np.arange(len(y)), train)
    lr = LogisticRegression(C=1.0, max_iter=10_000).fit(X[train], yi[train])
    assert res.loc[0, "auc_draws"][1] == pytest.approx(
        roc_auc_score(yi[test], lr.predict_proba(X[test])[:, 1])
    )


def test_deterministic_and_independent_of_other_ks(data):
    labels, X, _ = data
    y = labels["subtype"].to_numpy()
    a = few_shot(X, y, ks=(1, 5), draws=2, seed=0)
    b = few_shot(X, y, ks=(5,), draws=2, seed=0)
    c = few_shot(X, y, ks=(5,), draws=2, seed=1)
    assert a.loc[1, "auc_draws"] == b.loc[0, "auc_draws"]
    assert a.loc[1, "auc_draws"] != c.loc[0, "auc_draws"]
    assert a.loc[1, "auc_mean"] > 0.7  # macro one-vs-rest AUC on 3 classes


def test_skips_k_when_a_class_is_too_small(data):
    labels, X, _ = data
    y = labels["er_status"].to_numpy()  # 30 per class
    res = few_shot(X, y, ks=(25, 30), draws=2).set_index("k")
    assert res.loc[25, "status"] == "ok"
    assert res.loc[30, "status"] == "skipped"
    assert "30 case(s) <= k=30" in res.loc[30, "reason"]
    assert np.isnan(res.loc[30, "auc_mean"])


def test_scale_option_changes_the_probe(data):
    labels, X, _ = data
    y = labels["er_status"].to_numpy()
    plain = few_shot(X * 100, y, ks=(5,), draws=2)
    scaled = few_shot(X * 100, y, ks=(5,), draws=2, scale=True)
    assert plain.loc[0, "auc_draws"] != scaled.loc[0, "auc_draws"]


def test_missing_labels_are_dropped_and_counted(data):
    labels, X, _ = data
    y = labels["er_status"].to_numpy(dtype=object).copy()
    y[[0, 1, 2]] = [None, np.nan, ""]
    res = few_shot(X, y, ks=(5,), draws=1)
    assert res.loc[0, "n_missing_labels"] == 3 and res.loc[0, "n_test"] == 60 - 3 - 10
