"""The library's drift statistics (scipy/sklearn) give Evidently 0.7's numbers: every column test
the policy accepts, the domain classifier, and a whole plan against the rendered report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cscl.monitoring.drift import decide, drift_values, plan_drift
from cscl.monitoring.logs import read_window
from cscl.monitoring.policy import CAT_METHODS, NUM_METHODS, load_policy
from cscl.monitoring.reference import load_reference
from cscl.monitoring.stats import column_test, domain_classifier_auc
from cscl.synthetic import ShiftSpec

pytest.importorskip("evidently")
from evidently.legacy.calculations.stattests import get_stattest  # noqa: E402
from evidently.legacy.core import ColumnType  # noqa: E402
from evidently.legacy.metrics.data_drift.embedding_drift_methods import model  # noqa: E402

from cscl_platform.monitoring.report import render_report, report_values  # noqa: E402


def _evidently(method, r, c, categorical):
    ctype = ColumnType.Categorical if categorical else ColumnType.Numerical
    r = r.replace([-np.inf, np.inf], np.nan).dropna()
    c = c.replace([-np.inf, np.inf], np.nan).dropna()
    return float(get_stattest(r, c, ctype, method)(r, c, ctype, 0.05).drift_score)


def _numeric_pairs():
    rng = np.random.default_rng(0)
    yield "continuous", pd.Series(rng.normal(size=150)), pd.Series(rng.normal(0.3, 1.2, 60))
    yield (
        "float32 with inf/nan",
        pd.Series(np.r_[rng.normal(size=100), np.inf, np.nan].astype(np.float32)),
        pd.Series(np.r_[rng.normal(0.5, 1, 40), -np.inf].astype(np.float32)),
    )
    # <= 20 distinct values: the binned tests count values instead of histogram bins
    yield (
        "discrete",
        pd.Series(rng.integers(0, 6, 150).astype(float)),
        pd.Series(rng.integers(1, 8, 60).astype(float)),
    )


def _categorical_pairs():
    rng = np.random.default_rng(1)
    yield (
        "three vendors",
        pd.Series(rng.choice(["aperio", "hamamatsu", "leica"], 150)),
        pd.Series(rng.choice(["aperio", "leica", "philips"], 60, p=[0.2, 0.5, 0.3])),
    )
    yield (
        "binary labels with gaps",
        pd.Series(rng.choice(["negative", "positive", None], 150).astype(object)),
        pd.Series(rng.choice(["positive", "negative"], 60, p=[0.8, 0.2]).astype(object)),
    )
    yield "one value both sides", pd.Series(["a"] * 30), pd.Series(["a"] * 20)


@pytest.mark.parametrize("method", sorted(NUM_METHODS))
def test_numeric_tests_equal_evidently(method):
    for name, r, c in _numeric_pairs():
        ours = column_test(method, r, c, categorical=False)
        assert ours == pytest.approx(_evidently(method, r, c, False), rel=1e-12, abs=1e-15), name


@pytest.mark.parametrize("method", sorted(CAT_METHODS))
def test_categorical_tests_equal_evidently(method):
    for name, r, c in _categorical_pairs():
        ours = column_test(method, r, c, categorical=True)
        theirs = _evidently(method, r, c, True)
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15, nan_ok=True), name


def test_unknown_method_is_an_error():
    s = pd.Series([1.0, 2.0])
    with pytest.raises(ValueError, match="no categorical drift test named 'ks'"):
        column_test("ks", s, s, categorical=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_domain_classifier_equals_evidently(dtype):
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(150, 16)).astype(dtype)
    cur = (rng.normal(size=(60, 16)) + 0.2).astype(dtype)
    cols = [f"e{i}" for i in range(16)]
    theirs, _, _ = model(bootstrap=False)(pd.DataFrame(cur, columns=cols),
                                          pd.DataFrame(ref, columns=cols))  # fmt: skip
    assert domain_classifier_auc(ref, cur) == pytest.approx(float(theirs), abs=1e-12)


def test_plan_values_equal_the_rendered_report(tmp_path, bundle, record_model, mon):
    """The Evidently report of a plan shows drift.json's numbers (all four signals)."""
    recs = mon.write_cohort(tmp_path, record_model, 40, seed=300, shift=ShiftSpec(stain=0.3))
    ref = load_reference(str(bundle))
    win = read_window(str(tmp_path), "v1", mon.DAY, mon.DAY, pred_columns=ref.pred_columns,
                      embedding_dim=ref.embeddings.shape[1])  # fmt: skip
    labels = pd.DataFrame({"label__er_status": [("positive", "negative")[i % 2] for i in
                                                range(len(recs))]})  # fmt: skip
    policy = load_policy({"signals": {"target": {"min_samples": 30}}})
    plan = plan_drift(ref, win, policy, labels)
    ours = drift_values(plan)
    snapshot = render_report(plan)
    theirs = report_values(snapshot)
    assert set(ours) == set(theirs) and "slide_embedding" in ours and "label__er_status" in ours
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], abs=1e-12, nan_ok=True), key
    a, b = decide(plan, ours, policy), decide(plan, theirs, policy)
    assert {n: s.status for n, s in a.items()} == {n: s.status for n, s in b.items()}
    html = tmp_path / "r.html"
    snapshot.save_html(str(html))
    text = html.read_text()
    assert "slide_embedding" in text and "qc_od_mean_0" in text
