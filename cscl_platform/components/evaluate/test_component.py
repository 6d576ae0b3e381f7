"""evaluate + compare_models: the UI artifacts and the promotion rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl

from cscl.errors import InputError
from cscl.eval.metrics import REFERENCE_CLASSIFICATION_TASKS
from cscl.eval.quality import quality_score
from cscl_platform.components.conftest import art
from cscl_platform.components.evaluate.component import compare_models, evaluate


def test_interface():
    out = evaluate.component_spec.outputs
    assert out["metrics"].type == "system.Metrics@0.0.1"
    for task in REFERENCE_CLASSIFICATION_TASKS:  # one ROC + confusion matrix per task in the UI
        assert out[f"classification_{task}"].type == "system.ClassificationMetrics@0.0.1"
    assert out["report"].type == "system.HTML@0.0.1"
    assert out["triage"].type == "system.HTML@0.0.1"  # the IHC triage report, its own UI tab
    assert out["Output"].type == "Boolean"  # the gate's verdict; the score is in `metrics`
    assert compare_models.component_spec.outputs["comparison"].type == "system.Markdown@0.0.1"


@pytest.fixture(scope="module")
def evaluated(embeddings_parquet, baseline_parquet, cohort, tmp_path_factory) -> dict:
    """The evaluate component, run once on library-built embeddings."""
    d = tmp_path_factory.mktemp("evaluated")
    outs = dict(metrics=art(dsl.Metrics, d / "metrics"),
                report=art(dsl.HTML, d / "report.html"), triage=art(dsl.HTML, d / "triage.html"),
                results=art(dsl.Dataset, d / "res"))  # fmt: skip
    for t in REFERENCE_CLASSIFICATION_TASKS:
        outs[f"classification_{t}"] = art(dsl.ClassificationMetrics, d / f"classification_{t}")
    result = evaluate.python_func(
        embeddings=art(dsl.Dataset, embeddings_parquet),
        baseline_embeddings=art(dsl.Dataset, baseline_parquet),
        labels_uri=cohort.labels, tasks=cohort.tasks, protocols="fewshot,kfold",
        folds=2, n_boot=50, ks="1", min_score=0.1, **outs,
    )  # fmt: skip
    score = outs["metrics"].metadata["quality_score"]
    return {**outs, "score": score, "gate_passed": result, "tasks": cohort.tasks}


def test_evaluate_outputs(evaluated):
    m = evaluated["metrics"].metadata
    tasks = evaluated["tasks"].split(",")
    first = tasks[0]
    assert f"{first}.cscl.kfold_auc" in m and f"{first}.mean-pool.kfold_auc" in m
    assert m["quality_score"] == evaluated["score"] and 0.0 <= evaluated["score"] <= 1.0
    metrics = json.loads(Path(evaluated["results"].path, "metrics.json").read_text())
    # the training gate: score ≥ min_score AND better than mean-pool's score
    baseline = quality_score(metrics, "mean-pool")
    assert m["gate_min_score"] == 0.1 and m["gate_baseline_score"] == baseline
    passed = evaluated["score"] >= 0.1 and evaluated["score"] > baseline
    assert m["gate_passed"] == float(passed) and evaluated["gate_passed"] is passed
    assert len(m) <= 6 + 2 * len(tasks)  # headline only; the flat keys stay in metrics.json
    assert evaluated["score"] == quality_score(metrics, "cscl")  # the same number as the library's
    for task in REFERENCE_CLASSIFICATION_TASKS:
        cls = evaluated[f"classification_{task}"].metadata
        assert cls["task"] == task
        if task in tasks:
            assert "confusionMatrix" in cls and "note" not in cls
        else:
            assert "not evaluated" in cls["note"] and "confusionMatrix" not in cls
    html = Path(evaluated["report"].path).read_text()
    verdict = "PASSED" if evaluated["gate_passed"] else "FAILED"
    assert f"Quality gate {verdict}" in html  # the report's headline shows the gate
    assert html.index("Quality gate") < html.index("Results per task") < html.index("Dataset")
    triage = Path(evaluated["triage"].path).read_text()
    assert "<h1>IHC triage</h1>" in triage
    if {"er_status", "pgr_status", "her2_status", "ki67_status"} & set(tasks):
        # the tiny cohort has too few cases for a triage: the page says why
        assert "needs at least 10 cases per class" in triage
        assert "At 95 % sensitivity" not in triage


def test_compare_component_on_real_evaluation(eval_results_art, eval_results_dir, tmp_path):
    md, mt = art(dsl.Markdown, tmp_path / "cmp.md"), art(dsl.Metrics, tmp_path / "m")
    out = compare_models.python_func(
        eval_results=eval_results_art, comparison=md, metrics=mt,
        candidate_name="cscl", current_name="mean-pool", min_improvement=-1.0,
    )  # fmt: skip
    assert out is True and "PROMOTE" in (tmp_path / "cmp.md").read_text()
    metrics = json.loads(Path(eval_results_dir, "metrics.json").read_text())
    assert mt.metadata["candidate_score"] == quality_score(metrics, "cscl")
    assert mt.metadata["promote"] == 1.0


def test_compare_component_rejects_unknown_method(eval_results_art, tmp_path):
    md, mt = art(dsl.Markdown, tmp_path / "cmp.md"), art(dsl.Metrics, tmp_path / "m")
    with pytest.raises(InputError, match="'candidate' is not in this evaluation"):
        compare_models.python_func(eval_results=eval_results_art, comparison=md, metrics=mt)
