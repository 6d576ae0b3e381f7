"""The quality score (gate + retraining comparison): one NaN rule, computed from structured metrics."""

from __future__ import annotations

import json
import math

import pytest

from cscl.cli import main
from cscl.errors import InputError
from cscl.eval.metrics import flat_metrics
from cscl.eval.quality import compare_models, quality_score, score_summary


def _kfold(auc, bacc=0.5):
    m = {"auc": {"value": auc, "ci_low": None, "ci_high": None, "n_boot": 0}}
    m["balanced_accuracy"] = {"value": bacc, "ci_low": None, "ci_high": None, "n_boot": 0}
    return {"kfold": {"metrics": m}}


def _surv(c):
    return {"survival": {"cindex": {"value": c, "ci_low": None, "ci_high": None},
                         "logrank": {"p_value": 0.5}}}  # fmt: skip


def metrics_of(results: dict, comparisons: dict | None = None, primary="candidate") -> dict:
    """A metrics.json-shaped dict: {task: {method: result}}."""
    methods = list(dict.fromkeys(n for r in results.values() for n in r))
    methods.sort(key=lambda n: n != primary)
    tasks = {t: {"type": "classification", "results": r, "comparisons": (comparisons or {}).get(t, {})}
             for t, r in results.items()}  # fmt: skip
    return {"methods": methods, "primary": primary, "tasks": tasks}


def test_score_is_the_mean_over_tasks_with_a_finite_value():
    m = metrics_of({
        "a": {"candidate": _kfold(0.8), "current": _kfold(0.65)},
        "b": {"candidate": _kfold(0.6), "current": _kfold(0.65)},
        "os": {"candidate": _surv(0.7), "current": _surv(0.6)},  # no AUC: does not count
    })  # fmt: skip
    s = score_summary(m, "candidate")
    assert math.isclose(s.value, 0.7) and math.isclose(quality_score(m, "candidate"), 0.7)
    assert s.per_task == {"a": 0.8, "b": 0.6, "os": None} and s.tasks_without_value == ["os"]
    assert quality_score(m, "candidate", "cindex") == 0.7
    assert quality_score(m) == quality_score(m, "candidate")  # default: the primary method
    assert math.isclose(quality_score(m, "current", "kfold_balanced_accuracy"), 0.5)


@pytest.mark.parametrize(
    "b_result",
    [
        _kfold(None),  # NaN written to metrics.json as null
        _kfold(math.nan),  # NaN in an in-memory dict
        _kfold(math.inf),
        {"fewshot": [{"status": "skipped", "k": 25, "reason": "too few"}]},  # no k-fold run
        {},  # no protocol ran
    ],
)
def test_nan_rule_a_task_without_a_finite_value_does_not_count(b_result):
    m = metrics_of({"a": {"candidate": _kfold(0.8)}, "b": {"candidate": b_result}})
    s = score_summary(m)
    assert s.value == 0.8 and s.defined and s.tasks_without_value == ["b"]
    assert s.gate_value() == 0.8


def test_nan_rule_no_counted_task_means_no_score():
    m = metrics_of({"a": {"candidate": _kfold(None)}, "os": {"candidate": _surv(0.7)}})
    s = score_summary(m)
    assert not s.defined and math.isnan(s.value) and math.isnan(quality_score(m))
    assert s.gate_value() == 0.0  # KFP outputs carry no NaN: the floor of AUC fails the gate
    assert "no task produced kfold_auc" in s.describe()


def test_bad_metric_or_method_is_an_input_error():
    m = metrics_of({"a": {"candidate": _kfold(0.8)}})
    with pytest.raises(InputError, match="'kfold_acu' is not a quality-score metric"):
        quality_score(m, metric="kfold_acu")
    with pytest.raises(InputError, match="not a quality-score metric"):
        quality_score(m, metric="logrank_p")  # lower is better: cannot rank models
    with pytest.raises(InputError, match="'nope' is not in this evaluation"):
        quality_score(m, "nope")
    assert math.isnan(quality_score(m, metric="fewshot_k5_auc"))  # a valid name, no few-shot run


def test_score_uses_the_names_of_flat_metrics():
    m = metrics_of({"a": {"candidate": _kfold(0.8)}, "os": {"candidate": _surv(0.66)}})
    flat = flat_metrics(m)
    assert flat["a.candidate.kfold_auc"] == quality_score(m, metric="kfold_auc")
    assert flat["os.candidate.cindex"] == quality_score(m, metric="cindex")


PAIRED = {"a": {"current": {"kfold_auc_bootstrap": {"p_value": 0.03, "n_pairs": 200}}}}
BOTH = {"a": {"candidate": _kfold(0.8), "current": _kfold(0.65)},
        "b": {"candidate": _kfold(0.6), "current": _kfold(0.65)}}  # fmt: skip


def test_promotion_rule():
    m = metrics_of(BOTH, PAIRED)
    c = compare_models(m, min_improvement=0.0)
    assert c.promote and math.isclose(c.candidate.value, 0.7) and c.current.value == 0.65
    md = c.markdown()
    assert "PROMOTE" in md and "p = 0.03" in md and "| a | kfold_auc | 0.800 | 0.650 |" in md
    assert "| a | kfold_balanced_accuracy | 0.500 | 0.500 |" in md
    tiny = {"a": {"current": {"kfold_auc_bootstrap": {"p_value": 1.8e-06, "n_pairs": 200}}}}
    md = compare_models(metrics_of(BOTH, tiny)).markdown()
    assert "p < 0.001" in md and "e-06" not in md  # cscl.eval.pvalues rules
    assert c.numbers() == {"candidate_score": c.candidate.value, "current_score": 0.65,
                           "promote": 1.0}  # fmt: skip
    assert not compare_models(m, min_improvement=0.1).promote  # +0.05 is not enough
    worse = metrics_of({**BOTH, "a": {"candidate": _kfold(0.5), "current": _kfold(0.65)}})
    c = compare_models(worse)
    assert not c.promote and "KEEP CURRENT" in c.markdown() and "≤ 0.0" in c.reason


def test_promotion_with_missing_scores_follows_the_nan_rule():
    no_cand = metrics_of({"a": {"candidate": _kfold(None), "current": _kfold(0.7)}})
    c = compare_models(no_cand)
    assert not c.promote and "candidate has no kfold_auc" in c.reason
    assert c.numbers() == {"current_score": 0.7, "promote": 0.0}  # NaN is left out
    no_cur = metrics_of({"a": {"candidate": _kfold(0.6), "current": {}}})
    c = compare_models(no_cur)
    assert c.promote and "current model has no kfold_auc" in c.reason
    neither = metrics_of({"a": {"candidate": _kfold(None), "current": _kfold(None)}})
    assert not compare_models(neither).promote
    # a task where only one model has a value counts for that model only (the one rule)
    partial = metrics_of({"a": {"candidate": _kfold(0.8), "current": _kfold(0.7)},
                          "b": {"candidate": _kfold(0.9), "current": _kfold(None)}})  # fmt: skip
    c = compare_models(partial)
    assert math.isclose(c.candidate.value, 0.85) and c.current.value == 0.7 and c.promote


def test_paired_tests_are_shown_only_in_the_direction_they_test():
    m = metrics_of(BOTH, PAIRED, primary="current")  # the evaluation tested current > candidate
    assert compare_models(m).tests == {} and "Paired tests" not in compare_models(m).markdown()


def test_quality_score_of_a_real_evaluation(cohort, tmp_path, capsys):
    rc = main(["evaluate", "--embeddings", str(cohort / "signal.parquet"), "--labels",
               str(cohort / "labels.csv"), "--tasks", "er_status,subtype,os", "--out",
               str(tmp_path), "--protocol", "kfold", "--bootstrap", "50", "--n-iter", "2",
               "--inner-folds", "3", "--baseline", str(cohort / "noise.parquet"),
               "--baseline-name", "noise", "--quiet"])  # fmt: skip
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    aucs = [m["tasks"][t]["results"]["cscl"]["kfold"]["metrics"]["auc"]["value"]
            for t in ("er_status", "subtype")]  # fmt: skip
    assert quality_score(m) == pytest.approx(sum(aucs) / 2) and quality_score(m) > 0.9
    out = capsys.readouterr().out
    assert f"quality score: cscl: mean kfold_auc = {sum(aucs) / 2:.4f} over 2 task(s)" in out
    assert "without a value: os" in out  # skipped: survival task, no survival protocol
    c = compare_models(m, "cscl", "noise")
    assert c.promote and "kfold_auc_bootstrap" in c.tests["er_status"]


def test_cli_rejects_a_bad_score_metric_before_evaluating(cohort, tmp_path, capsys):
    rc = main(["evaluate", "--embeddings", str(cohort / "signal.parquet"), "--labels",
               str(cohort / "labels.csv"), "--tasks", "er_status", "--out", str(tmp_path),
               "--score-metric", "auc"])  # fmt: skip
    assert rc == 2 and "'auc' is not a quality-score metric" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()
