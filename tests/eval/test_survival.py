import numpy as np
import pytest
from sksurv.compare import compare_survival
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from cscl.errors import InputError
from cscl.eval.survival import n_components_for, survival_eval


def test_signal_cindex_agrees_with_sksurv(data):
    labels, X, N = data
    t, e = labels["os_time"].to_numpy(), labels["os_event"].to_numpy().astype(bool)
    r = survival_eval(X, t, e, labels["case_id"], n_boot=200)
    p = r.predictions
    ref = concordance_index_censored(p["event"].astype(bool), p["time"], p["risk"])[0]
    assert r.cindex["value"] == pytest.approx(ref) and ref > 0.65
    assert r.cindex["ci_low"] <= ref <= r.cindex["ci_high"]
    chisq, pv = compare_survival(Surv.from_arrays(p["event"], p["time"]), p["risk_group"])
    assert r.logrank["p_value"] == pytest.approx(pv) and pv < 0.05
    assert set(p["risk_group"]) == {"high", "low"}
    noise = survival_eval(N, t, e, n_boot=50)
    assert noise.cindex["value"] < ref - 0.1


def test_deterministic(data):
    labels, X, _ = data
    t, e = labels["os_time"].to_numpy(), labels["os_event"].to_numpy().astype(bool)
    a = survival_eval(X, t, e, n_boot=50, seed=3)
    b = survival_eval(X, t, e, n_boot=50, seed=3)
    assert a.predictions.equals(b.predictions) and a.cindex == b.cindex


def test_components_follow_events():
    assert n_components_for(30, 48, 64) == 3
    assert n_components_for(500, 1000, 512) == 10
    assert n_components_for(3, 10, 64) == 1


def test_too_few_events_is_an_error(data):
    labels, X, _ = data
    t = labels["os_time"].to_numpy()
    e = np.zeros(len(t), bool)
    e[:3] = True
    with pytest.raises(InputError, match="3 events"):
        survival_eval(X, t, e, folds=5, task="os")
