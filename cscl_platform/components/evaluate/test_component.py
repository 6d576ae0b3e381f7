"""evaluate + compare_models: the UI artifacts and the promotion rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cscl.eval.quality import quality_score
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
    metrics = json.loads(Path(chain["eval_results"].path, "metrics.json").read_text())
    assert chain["score"] == quality_score(metrics, "cscl")  # the same number as the library's
    cls = chain["classification"].metadata
    assert "confusionMatrix" in cls and cls["task"] == first
    assert "<html" in Path(chain["eval_report"].path).read_text().lower()


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
    assert mt.metadata["promote"] == 1.0


def test_compare_component_rejects_unknown_method(chain, tmp_path):
    from kfp import dsl

    from cscl.errors import InputError
    from cscl_platform.components.conftest import art

    md, mt = art(dsl.Markdown, tmp_path / "cmp.md"), art(dsl.Metrics, tmp_path / "m")
    with pytest.raises(InputError, match="'candidate' is not in this evaluation"):
        compare_models.python_func(eval_results=chain["eval_results"], comparison=md, metrics=mt)
