"""Model card: headline first, a task table with CIs, baseline and p-values, chance warnings."""

from __future__ import annotations

import json

import pytest

from cscl_platform.components.package.card import format_p, model_card


def _kfold(auc, lo=None, hi=None):
    return {"kfold": {"metrics": {"auc": {"value": auc, "ci_low": lo, "ci_high": hi}}}}


@pytest.fixture
def bundle_dir(tmp_path):
    doc = {"name": "cscl", "version": "0.1.0+abc", "tasks": {
        "er_status": {"type": "classification", "classes": ["negative", "positive"]},
        "os": {"type": "survival"}}}  # fmt: skip
    (tmp_path / "bundle.json").write_text(json.dumps(doc))
    return tmp_path


METRICS = {
    "methods": ["cscl", "mean-pool"],
    "primary": "cscl",
    "tasks": {
        "er_status": {"type": "classification", "classes": ["negative", "positive"],
                      "results": {"cscl": _kfold(0.91, 0.85, 0.96), "mean-pool": _kfold(0.7)},
                      "comparisons": {"mean-pool": {"kfold_auc_bootstrap": {"p_value": 1.8e-6}}}},
        "her2_status": {"type": "classification", "classes": ["negative", "positive"],
                        "results": {"cscl": _kfold(0.0), "mean-pool": _kfold(0.6)},
                        "comparisons": {"mean-pool": {"kfold_auc_folds": {"p_value": 0.5}}}},
        "os": {"type": "survival", "comparisons": {}, "results": {
            "cscl": {"survival": {"cindex": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6},
                                  "logrank": {"p_value": 0.3}}}}},
    },
}  # fmt: skip


def test_format_p():
    assert format_p(1.8e-6) == "p < 0.001" and format_p(0.0423) == "p = 0.042"
    assert format_p(None) == "—" and format_p(0.0) == "p < 0.001"
    assert format_p(1.8e-6, n_cases=6) == "p not interpretable (6 cases)"


def test_card_on_a_handful_of_cases_says_so(bundle_dir):
    small = {**METRICS, "dataset": {"n_cases": 6}}
    small["tasks"] = {t: {**e, "n_cases": 6} for t, e in METRICS["tasks"].items()}
    text = model_card(bundle_dir, small, "s3://b/m/")
    assert "**WARNING: evaluated on only 6 cases**" in text
    assert text.index("only 6 cases") < text.index("## Evaluation")
    assert "| 0.700 | p not interpretable (6 cases) |" in text and "p < 0.001" not in text


def test_card_table_warnings_and_score(bundle_dir):
    text = model_card(bundle_dir, METRICS, "s3://b/models/cscl/0.1.0+abc/")
    assert text.startswith("# Model card: cscl 0.1.0+abc")
    assert "| er_status | kfold_auc | 0.910 (0.850–0.960) | 0.700 | p < 0.001 |" in text
    assert "| her2_status | kfold_auc | 0.000 ⚠ chance | 0.600 | p = 0.500 |" in text
    assert "| os | cindex | 0.500 (0.400–0.600) ⚠ chance | — | — |" in text
    warnings = [ln for ln in text.splitlines() if "WARNING" in ln]
    assert len(warnings) == 2 and "her2_status" in warnings[0] and "os" in warnings[1]
    assert text.index("WARNING") < text.index("## Evaluation")  # seen before the details
    assert "**Quality score**: cscl: mean kfold_auc = 0.4550 over 2 task(s)" in text
    assert "- **er_status** (classification): negative, positive" in text
    assert "{" not in text.split("## Tasks")[1]  # names, not Python dicts
    assert "0.000 |" not in text.replace("| 0.000 ⚠", "")  # no p printed as 0.000


def test_card_without_evaluation(bundle_dir):
    text = model_card(bundle_dir, {}, "s3://b/m/")
    assert "No evaluation was stored" in text and "WARNING" not in text
