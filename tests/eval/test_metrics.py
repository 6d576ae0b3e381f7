"""Headline figures for the KFP UI and the model card: one primary metric per task, method vs
baseline, the gate, chance warnings, and one ClassificationMetrics entry per reference task."""

from __future__ import annotations

import json

import pytest

from cscl.cli import main
from cscl.eval.metrics import (
    REFERENCE_CLASSIFICATION_TASKS,
    flat_metrics,
    headline_metrics,
    primary_metric,
    reference_classification_artifacts,
    task_headlines,
)
from cscl.eval.quality import score_summary


def _kfold(auc, lo=None, hi=None):
    m = {"auc": {"value": auc, "ci_low": lo, "ci_high": hi, "n_boot": 0},
         "balanced_accuracy": {"value": 0.5, "ci_low": None, "ci_high": None, "n_boot": 0}}  # fmt: skip
    return {"kfold": {"metrics": m}}


def _surv(c):
    return {"survival": {"cindex": {"value": c, "ci_low": 0.4, "ci_high": 0.6},
                         "logrank": {"p_value": 0.5}}}  # fmt: skip


@pytest.fixture
def hand_metrics() -> dict:
    p = {"mean-pool": {"kfold_auc_bootstrap": {"p_value": 0.0004}}}
    return {
        "methods": ["cscl", "mean-pool"],
        "primary": "cscl",
        "tasks": {
            "er_status": {"type": "classification", "classes": ["neg", "pos"], "comparisons": p,
                          "results": {"cscl": _kfold(0.9, 0.8, 0.95), "mean-pool": _kfold(0.7)}},
            "her2_status": {"type": "classification", "classes": ["neg", "pos"], "comparisons": {},
                            "results": {"cscl": _kfold(0.5), "mean-pool": _kfold(0.6)}},
            "os": {"type": "survival", "comparisons": {},
                   "results": {"cscl": _surv(0.45), "mean-pool": _surv(0.55)}},
        },
    }  # fmt: skip


def test_primary_metric_per_task_type():
    assert primary_metric({"type": "survival"}) == "cindex"
    assert primary_metric({"type": "classification"}) == "kfold_auc"
    assert primary_metric({"type": "classification"}, "fewshot_k5_auc") == "fewshot_k5_auc"
    assert primary_metric({"type": "classification"}, "cindex") == "kfold_auc"


def test_task_headlines_values_baseline_p_and_chance(hand_metrics):
    rows = {r.task: r for r in task_headlines(hand_metrics)}
    er = rows["er_status"]
    assert (er.metric, er.value, er.ci_low, er.ci_high) == ("kfold_auc", 0.9, 0.8, 0.95)
    assert (er.baseline, er.baseline_value, er.p_value) == ("mean-pool", 0.7, 0.0004)
    assert not er.at_or_below_chance
    assert rows["her2_status"].at_or_below_chance  # AUC 0.5 is chance: at, not only below
    assert rows["os"].metric == "cindex" and rows["os"].at_or_below_chance
    assert rows["os"].p_value is None  # no paired test for the C-index


def test_headline_metrics_are_few_and_show_the_gate(hand_metrics):
    from cscl.eval.headline import QualityGate, gate_verdict

    def head(**gate):
        g = QualityGate(**gate)
        return headline_metrics(hand_metrics, score, g, gate_verdict(hand_metrics, g, "kfold_auc"))

    score = score_summary(hand_metrics, "cscl")
    h = head(min_score=0.75)
    assert h["quality_score"] == pytest.approx(0.7) and h["quality_score_tasks"] == 2
    assert h["gate_min_score"] == 0.75 and h["gate_passed"] == 0.0
    assert h["er_status.cscl.kfold_auc"] == 0.9 and h["er_status.mean-pool.kfold_auc"] == 0.7
    assert h["os.cscl.cindex"] == 0.45 and h["os.mean-pool.cindex"] == 0.55
    assert len(h) == 4 + 2 * 3 < len(flat_metrics(hand_metrics))
    assert head(min_score=0.7)["gate_passed"] == 1.0  # ≥ passes
    assert "gate_passed" not in headline_metrics(hand_metrics, score)  # no gate, none shown
    # the training gate also asks the model to beat mean-pool: cscl 0.7 vs mean-pool's score
    mp = score_summary(hand_metrics, "mean-pool").value
    h = head(min_score=0.1, baseline="mean-pool")
    assert h["gate_baseline_score"] == pytest.approx(mp) and h["gate_min_gain"] == 0.0
    assert h["gate_passed"] == float(mp < 0.7)
    assert head(min_score=0.1, baseline="mean-pool", min_improvement=-1.0)["gate_passed"] == 1.0


@pytest.fixture(scope="module")
def evaluated(cohort, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("headline")
    rc = main(["evaluate", "--embeddings", str(cohort / "signal.parquet"), "--labels",
               str(cohort / "labels.csv"), "--tasks", "er_status,subtype,os", "--out", str(out),
               "--protocol", "kfold,survival", "--bootstrap", "50", "--n-iter", "2",
               "--inner-folds", "3", "--baseline", str(cohort / "noise.parquet"),
               "--baseline-name", "noise", "--quiet"])  # fmt: skip
    assert rc == 0
    return json.loads((out / "metrics.json").read_text())


def test_headline_of_a_real_evaluation_matches_the_flat_metrics(evaluated):
    flat = flat_metrics(evaluated)
    h = headline_metrics(evaluated, score_summary(evaluated))
    for key in ("er_status.cscl.kfold_auc", "subtype.noise.kfold_auc", "os.cscl.cindex"):
        assert h[key] == flat[key]
    rows = {r.task: r for r in task_headlines(evaluated)}
    assert rows["er_status"].value > 0.9 and rows["er_status"].p_value < 0.05  # planted signal
    assert rows["er_status"].baseline == "noise" and rows["er_status"].baseline_value < 0.8


def test_one_classification_artifact_per_reference_task(evaluated):
    arts = reference_classification_artifacts(evaluated)
    assert list(arts) == list(REFERENCE_CLASSIFICATION_TASKS)
    er, sub = arts["er_status"], arts["subtype"]
    assert set(er["roc"]) == {"fpr", "tpr", "threshold"} and len(er["confusion"]["matrix"]) == 2
    assert "roc" not in sub and sub["confusion"]["categories"] == ["LumA", "LumB", "TNBC"]
    assert arts["pgr_status"] == {"note": "pgr_status was not evaluated in this run"}
    other = reference_classification_artifacts(evaluated, "noise")
    assert other["er_status"]["confusion"] != er["confusion"]  # the method's own predictions
