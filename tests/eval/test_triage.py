"""IHC triage: calibration, the operating table and its bootstrap, planted data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cscl.errors import TooFewCases
from cscl.eval.bootstrap import resample_indices
from cscl.eval.calibration import brier, cross_fitted, fit_platt, logit, reliability, sigmoid
from cscl.eval.metrics import flat_metrics
from cscl.eval.run import evaluate
from cscl.eval.triage import (
    ihc_triage,
    operating_rows,
    operating_table,
    sensitivity_threshold,
    triage_marker,
)
from cscl.eval.triage_report import render_triage_html, triage_section

FAST = dict(n_boot=200, n_iter=3, inner_folds=3, draws=3)


def test_which_tasks_are_ihc_status_tasks():
    assert triage_marker("er_status", ["negative", "positive"]) == ("ER", "positive")
    assert triage_marker("ki67_status", ["low", "high"]) == ("KI67", "high")
    assert triage_marker("her2_status", ["positive", "negative"]) == ("HER2", "positive")
    assert triage_marker("subtype", ["LumA", "LumB"]) is None  # not <marker>_status
    assert triage_marker("er_status", ["a", "b", "positive"]) is None  # not binary
    assert triage_marker("er_status", ["A", "B"]) is None  # no positive label


def test_threshold_is_the_largest_that_keeps_the_target_sensitivity():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    pos = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0], bool)  # 5 positives
    assert sensitivity_threshold(p, pos, 0.8) == 0.4  # 4 of 5 at or above 0.4, not above 0.4+
    assert sensitivity_threshold(p, pos, 0.81) == 0.1  # needs all 5
    row = {k: float(v[0]) for k, v in operating_rows(p, pos, 0.8).items()}
    assert row["threshold"] == 0.4 and row["sensitivity"] == 0.8
    assert row["skip_fraction"] == 0.4  # 0.3, 0.2, 0.1, 0.05
    assert row["missed_positives"] == 1 and row["npv"] == 0.75 and row["specificity"] == 0.6


def test_separable_scores_skip_every_negative_at_99_percent():
    rng = np.random.default_rng(0)
    pos = rng.random(200) < 0.35  # < 100 positives: 99 % sensitivity keeps every one
    p = np.where(pos, rng.uniform(0.6, 1.0, 200), rng.uniform(0.0, 0.4, 200))
    rows = operating_table(p, pos, (0.9, 0.99), n_boot=200, seed=1)
    top = rows[1]
    assert top["skip_fraction"]["value"] == pytest.approx((~pos).mean())
    assert top["npv"]["value"] == 1.0 and top["missed_positives"]["value"] == 0
    assert top["npv"]["ci_low"] == 1.0 and top["missed_positives"]["ci_high"] == 0
    missed = int(pos.sum()) - int(np.ceil(0.9 * pos.sum()))  # at 90 %: the lowest positives go
    assert rows[0]["missed_positives"]["value"] == missed
    assert rows[0]["skip_fraction"]["value"] == pytest.approx(((~pos).sum() + missed) / 200)


def test_uninformative_scores_skip_one_minus_sensitivity():
    rng = np.random.default_rng(1)
    pos = rng.random(20000) < 0.3
    p = rng.random(20000)
    for row in operating_table(p, pos, (0.9, 0.95, 0.99), n_boot=20, seed=2):
        s = row["target_sensitivity"]
        assert row["skip_fraction"]["value"] == pytest.approx(1 - s, abs=0.015)
        assert row["npv"]["value"] == pytest.approx(0.7, abs=0.03)  # skipped = the base rate


def test_bootstrap_chooses_the_threshold_again_in_every_resample():
    rng = np.random.default_rng(2)
    pos = rng.random(200) < 0.4
    p = sigmoid(1.5 * pos + rng.normal(size=200))
    idx = resample_indices(200, 50, 7)
    rows = operating_rows(p[idx], pos[idx], 0.95)
    for b in range(50):  # each resample's threshold is the one chosen on that resample
        assert rows["threshold"][b] == sensitivity_threshold(p[idx[b]], pos[idx[b]], 0.95)
    assert (rows["sensitivity"] >= 0.95).all()  # so every resample meets the target
    assert len(np.unique(rows["threshold"])) > 5  # not one fixed threshold
    row = operating_table(p, pos, (0.95,), n_boot=50, seed=7)[0]
    assert row["threshold"]["ci_low"] < row["threshold"]["value"] < row["threshold"]["ci_high"]
    assert row["skip_fraction"]["ci_low"] < row["skip_fraction"]["ci_high"]


def test_platt_calibration_fixes_miscalibrated_scores():
    rng = np.random.default_rng(3)
    q = rng.beta(2, 3, 4000)  # true probabilities
    pos = rng.random(4000) < q
    p = sigmoid(3.0 * logit(q) + 1.5)  # overconfident and shifted (a balanced-weights probe)
    m = fit_platt(p, pos)
    assert m.a == pytest.approx(1 / 3, abs=0.05) and m.b == pytest.approx(-0.5, abs=0.15)
    cal = cross_fitted(p, pos, np.arange(4000) % 5)
    assert brier(cal, pos) < brier(p, pos) - 0.03
    assert brier(cal, pos) == pytest.approx(brier(q, pos), abs=0.005)
    assert reliability(cal, pos)["ece"] < 0.03 < reliability(p, pos)["ece"]
    order = np.argsort(p)
    assert (np.diff(m(p)[order]) >= 0).all()  # monotone: the ranking (AUC) is unchanged


def test_cross_fitting_never_uses_a_fold_for_its_own_map():
    rng = np.random.default_rng(4)
    p, pos, folds = rng.random(100), rng.random(100) < 0.5, np.arange(100) % 4
    cal = cross_fitted(p, pos, folds)
    for f in range(4):
        rest = folds != f
        expect = fit_platt(p[rest], pos[rest])(p[~rest])
        assert np.allclose(cal[~rest], expect)


def test_reliability_bins():
    rng = np.random.default_rng(5)
    q = rng.random(20000)
    rel = reliability(q, rng.random(20000) < q)
    assert sum(rel["n"]) == 20000 and len(rel["n"]) == 10 and rel["ece"] < 0.02
    assert np.allclose(rel["mean_predicted"], rel["observed_fraction"], atol=0.03)


def test_section_in_words_and_too_few_cases():
    rng = np.random.default_rng(6)
    y = np.where(rng.random(120) < 0.4, "positive", "negative")
    p = sigmoid(2.0 * (y == "positive") + rng.normal(size=120) - 1)
    sec = ihc_triage(p, y, np.arange(120) % 5, task="er_status", positive_class="positive",
                     n_boot=100)  # fmt: skip
    assert sec["marker"] == "ER" and sec["n_positive"] + sec["n_negative"] == 120
    row = next(r for r in sec["operating_points"] if r["target_sensitivity"] == 0.95)
    sk = row["skip_fraction"]
    assert row["sentence"].startswith(
        f"At 95 % sensitivity for ER-positive cases, {100 * sk['value']:.0f} % "
        f"({100 * sk['ci_low']:.0f}–{100 * sk['ci_high']:.0f} %) of ER stains could be skipped; "
        f"{int(row['missed_positives']['value'])} of {sec['n_positive']} positives would be missed"
    )
    cal = sec["calibration"]
    assert cal["brier"]["ci_low"] <= cal["brier"]["value"] <= cal["brier"]["ci_high"]
    few = np.array(["positive"] * 9 + ["negative"] * 40)
    with pytest.raises(TooFewCases, match="at least 10 cases per class, found 9 positive"):
        ihc_triage(np.random.default_rng(0).random(49), few, np.arange(49) % 3,
                   task="er_status", positive_class="positive")  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("triage_eval")
    m = evaluate(
        {"cscl": cohort / "signal.parquet", "noise": cohort / "noise.parquet"},
        cohort / "labels.csv", "er_status,subtype", out, "kfold", **FAST,
    )  # fmt: skip
    return m, out


def test_evaluate_writes_the_triage_of_ihc_status_tasks(evaluated):
    m, out = evaluated
    er = m["tasks"]["er_status"]["results"]
    sig, noise = er["cscl"]["kfold"]["triage"], er["noise"]["kfold"]["triage"]
    assert "triage" not in m["tasks"]["subtype"]["results"]["cscl"]["kfold"]
    assert [r["target_sensitivity"] for r in sig["operating_points"]] == [0.9, 0.95, 0.99]
    skip = {n: t["operating_points"][1]["skip_fraction"]["value"] for n, t in
            (("cscl", sig), ("noise", noise))}  # fmt: skip
    assert skip["cscl"] > 0.3 > skip["noise"]  # planted signal: many stains spared
    assert noise["calibration"]["brier"]["value"] < noise["calibration"]["brier_uncalibrated"]
    assert m["config"]["triage"]["target_sensitivities"] == [0.9, 0.95, 0.99]
    flat = flat_metrics(m)
    assert flat["er_status.cscl.triage_skip_fraction_sens95"] == skip["cscl"]
    assert (
        "er_status.cscl.triage_brier_ci_low" in flat and "er_status.cscl.triage_npv_sens99" in flat
    )
    doc = json.loads((out / "triage.json").read_text())
    assert doc["format"] == "cscl-triage/1" and doc["tasks"]["er_status"]["cscl"] == sig
    html = (out / "triage.html").read_text()
    assert "At 95 % sensitivity for ER-positive cases" in html and "<svg" in html
    assert "IHC triage" in (out / "report.html").read_text()


def test_triage_can_be_left_out_and_too_few_cases_is_a_skip(
    cohort, make_planted, meta_for, tmp_path
):
    m = evaluate(cohort / "signal.parquet", cohort / "labels.csv", "er_status", tmp_path / "a",
                 "kfold", triage_sensitivities=(), **FAST)  # fmt: skip
    assert "triage" not in m["tasks"]["er_status"]["results"]["cscl"]["kfold"]
    assert not (tmp_path / "a" / "triage.json").exists()
    assert triage_section(m) == "" and "No IHC triage" in render_triage_html(m)
    labels, X, _ = make_planted(n=30)
    m = evaluate((meta_for(labels.case_id), X), labels.iloc[:18], "er_status", tmp_path / "b",
                 "kfold", **FAST)  # fmt: skip
    skip = [s for s in m["skipped"] if s["protocol"] == "kfold triage"]
    assert skip and "at least 10 cases per class" in skip[0]["reason"]
    assert "kfold" in m["tasks"]["er_status"]["results"]["cscl"]  # the probe itself still ran
    assert "no triage for er_status" in (tmp_path / "b" / "triage.html").read_text()


def test_cli_defaults_are_the_library_defaults():
    import argparse

    from cscl.commands import evaluate as command
    from cscl.errors import InputError
    from cscl.eval.triage import TARGET_SENSITIVITIES

    p = argparse.ArgumentParser()
    command.add_arguments(p)
    need = ["--embeddings", "e", "--labels", "l", "--tasks", "t", "--out", "o"]
    assert tuple(p.parse_args(need).triage_sensitivities) == TARGET_SENSITIVITIES
    assert p.parse_args([*need, "--triage-sensitivities", ""]).triage_sensitivities == []
    with pytest.raises(InputError, match="not between 0 and 1"):
        evaluate("e.parquet", "l.csv", "t", "o", triage_sensitivities=(95,))
