import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from cscl.errors import InputError
from cscl.eval.kfold import kfold_eval

FAST = dict(n_iter=3, inner_folds=3, n_boot=200)


def test_binary_signal_metrics_agree_with_sklearn(data):
    labels, X, N = data
    y = labels["er_status"].to_numpy()
    ids = labels["case_id"].to_numpy()
    r = kfold_eval(X, y, ids, **FAST)
    p = r.predictions
    assert sorted(p["case_id"]) == sorted(ids)  # every case predicted exactly once
    assert r.classes == ["negative", "positive"] and r.roc["positive_class"] == "positive"
    auc = roc_auc_score(p["y_true"] == "positive", p["prob_positive"])
    assert r.metrics["auc"]["value"] == pytest.approx(auc)
    assert r.metrics["f1_weighted"]["value"] == pytest.approx(
        f1_score(p["y_true"], p["y_pred"], average="weighted")
    )
    assert r.metrics["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(p["y_true"], p["y_pred"])
    )
    assert auc > 0.95
    m = r.metrics["auc"]
    assert m["ci_low"] <= m["value"] <= m["ci_high"] and m["n_boot"] == 200
    assert np.asarray(r.confusion["matrix"]).sum() == len(y)
    assert r.roc["fpr"][0] == 0 and r.roc["tpr"][-1] == 1 and max(r.roc["threshold"]) <= 1
    noise = kfold_eval(N, y, ids, **FAST)
    assert 0.3 < noise.metrics["auc"]["value"] < 0.7


def test_multiclass_macro_ovr_auc(data):
    labels, X, _ = data
    y = labels["subtype"].to_numpy()
    r = kfold_eval(X, y, labels["case_id"], **FAST)
    proba = r.predictions[[f"prob_{c}" for c in r.classes]].to_numpy()
    ref = roc_auc_score(r.predictions["y_true"], proba, multi_class="ovr", average="macro")
    assert r.metrics["auc"]["value"] == pytest.approx(ref) and ref > 0.8
    assert r.roc is None and len(r.confusion["matrix"]) == 3


def test_deterministic(data):
    labels, X, _ = data
    y = labels["er_status"].to_numpy()
    a = kfold_eval(X[:, :16], y, seed=1, folds=3, **FAST)
    b = kfold_eval(X[:, :16], y, seed=1, folds=3, **FAST)
    assert a.predictions.equals(b.predictions) and a.metrics == b.metrics


def test_cases_never_split_across_folds(data):
    labels, X, _ = data
    ids = np.repeat(labels["case_id"].to_numpy()[:30], 2)  # two slides per case
    y = np.repeat(labels["er_status"].to_numpy()[:30], 2)
    r = kfold_eval(X, y, ids, folds=3, **FAST)
    assert (r.predictions.groupby("case_id")["fold"].nunique() == 1).all()


def test_bad_input_is_an_error(data):
    labels, X, _ = data
    y = labels["er_status"].to_numpy().copy()
    y[:] = "negative"
    with pytest.raises(InputError, match="er_status"):
        kfold_eval(X, y, task="er_status", **FAST)
    y[:3] = "positive"
    with pytest.raises(InputError, match="fewer than 5 folds"):
        kfold_eval(X, y, task="er_status", **FAST)


def test_c_search_matches_randomized_search_cv(data):
    """The loop in CSearch is the RandomizedSearchCV protocol: same inner scores, same best C."""
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold

    from cscl.eval.kfold import CSearch, _pipe, average_precision

    labels, X, _ = data
    _, y = np.unique(labels["subtype"], return_inverse=True)
    mine = CSearch(n_iter=3, inner_folds=3, seed=4).fit(X[:, :16], y)
    ref = RandomizedSearchCV(
        _pipe(1.0, 5000),
        {"lr__C": mine.candidates()},
        n_iter=3,
        scoring="average_precision",
        cv=StratifiedKFold(3, shuffle=True, random_state=4),
    ).fit(X[:, :16], y)
    assert np.allclose(mine.cv_scores_, ref.cv_results_["mean_test_score"])
    assert mine.best_C_ == pytest.approx(ref.best_params_["lr__C"])
    rng = np.random.default_rng(0)
    z = np.round(rng.normal(size=(30, 3)), 1)  # tied scores
    assert average_precision(y[:30], z) == pytest.approx(average_precision_score(y[:30], z))


def test_missing_labels_never_become_a_class(data):
    labels, X, _ = data
    y = labels["er_status"].to_numpy(dtype=object).copy()
    y[:4] = np.nan
    r = kfold_eval(X, y, labels["case_id"], **FAST)
    assert r.classes == ["negative", "positive"] and len(r.predictions) == 56
    assert "4 case(s) without a label dropped" in r.notes
