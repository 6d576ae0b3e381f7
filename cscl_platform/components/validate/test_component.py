"""validate component: HTML + Metrics outputs, pass/fail return; stop_run fails a run."""

from __future__ import annotations

import pandas as pd
import pytest
from kfp import dsl

from cscl_platform.components.conftest import art
from cscl_platform.components.validate.component import stop_run, validate


def test_interface():
    spec = validate.component_spec
    assert spec.outputs["report"].type == "system.HTML@0.0.1"
    assert spec.outputs["metrics"].type == "system.Metrics@0.0.1"
    assert spec.outputs["Output"].type == "Boolean"
    assert spec.inputs["slide_index"].type == "system.Dataset@0.0.1"


def test_pass_and_fail(index_art, cohort, tmp_path):
    out = {n: art(c, tmp_path / n) for n, c in
           (("report", dsl.HTML), ("metrics", dsl.Metrics), ("qc_table", dsl.Dataset))}  # fmt: skip
    ok = validate.python_func(slide_index=index_art, labels_uri=cohort.labels, **out)
    assert ok is True and "PASSED" in (tmp_path / "report").read_text()
    assert out["metrics"].metadata["pass_rate"] == 1.0
    assert len(pd.read_csv(tmp_path / "qc_table")) == 8
    # an illegal label value fails the gate; the report says which
    lab = pd.read_csv(cohort.labels)
    lab.loc[0, "her2_status"] = "2+"
    lab.to_csv(tmp_path / "labels.csv", index=False)
    bad = validate.python_func(
        slide_index=index_art, labels_uri=str(tmp_path / "labels.csv"), **out
    )
    assert bad is False and "2+" in (tmp_path / "report").read_text()
    # ... unless the user lowers the gate
    assert validate.python_func(
        slide_index=index_art, labels_uri=str(tmp_path / "labels.csv"), min_pass_rate=0.9,
        **out,
    )  # fmt: skip


def test_stop_run_raises():
    with pytest.raises(RuntimeError, match="validation failed"):
        stop_run.python_func(message="validation failed: see report")
