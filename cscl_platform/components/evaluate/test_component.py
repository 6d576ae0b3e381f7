"""evaluate + compare_models: the UI artifacts and the promotion rule."""

from __future__ import annotations

import math
from pathlib import Path

from cscl_platform.components.evaluate.compare import compare, quality_score
from cscl_platform.components.evaluate.component import compare_models, evaluate


def test_interface():
    out = evaluate.component_spec.outputs
    assert out["metrics"].type == "system.Metrics@0.0.1"
    assert out["classification"].type == "system.ClassificationMetrics@0.0.1"
    assert out["report"].type == "system.HTML@0.0.1"
    assert out["Output"].type == "Float"
    assert compare_models.component_spec.outputs["comparison"].type == "system.Markdown@0.0.1"


def test_evaluate_outputs(chain):
    m = chain["eval_metrics"].metadata
    first = chain["tasks"].split(",")[0]
    assert f"{first}.cscl.kfold_auc" in m and f"{first}.mean-pool.kfold_auc" in m
    assert m["quality_score"] == chain["score"] and 0.0 <= chain["score"] <= 1.0
    cls = chain["classification"].metadata
    assert "confusionMatrix" in cls and cls["task"] == first
    assert "<html" in Path(chain["eval_report"].path).read_text().lower()


def test_promotion_rule():
    flat = {"a.candidate.kfold_auc": 0.8, "b.candidate.kfold_auc": 0.6,
            "a.current.kfold_auc": 0.65, "b.current.kfold_auc": 0.65,
            "a.candidate_vs_current.kfold_auc_bootstrap_p": 0.03}  # fmt: skip
    assert math.isclose(quality_score(flat, "candidate"), 0.7)
    promote, report, nums = compare(flat, min_improvement=0.0)
    assert promote and "PROMOTE" in report and "p = 0.03" in report
    assert not compare(flat, min_improvement=0.1)[0]  # +0.05 is not enough
    worse = {**flat, "a.candidate.kfold_auc": 0.5}
    assert not compare(worse)[0]
    assert not compare({"a.current.kfold_auc": 0.7})[0]  # no candidate score: keep current


def test_compare_component_on_real_evaluation(chain, tmp_path):
    from kfp import dsl

    from cscl_platform.components.conftest import art

    md, mt = art(dsl.Markdown, tmp_path / "cmp.md"), art(dsl.Metrics, tmp_path / "m")
    out = compare_models.python_func(
        eval_results=chain["eval_results"], comparison=md, metrics=mt,
        candidate_name="cscl", current_name="mean-pool", min_improvement=-1.0,
    )  # fmt: skip
    assert out is True and "PROMOTE" in (tmp_path / "cmp.md").read_text()
    assert mt.metadata["candidate_score"] == chain["score"]
