"""register component: registration table + metrics; synthetic truth gives the error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from kfp import dsl

from cscl_platform.components.conftest import art
from cscl_platform.components.register.component import register


def test_interface():
    spec = register.component_spec
    assert spec.outputs["registration"].type == "system.Dataset@0.0.1"
    assert spec.outputs["metrics"].type == "system.Metrics@0.0.1"


def test_registration(index_art, cohort, tmp_path):
    reg, metrics = art(dsl.Dataset, tmp_path / "registration"), art(dsl.Metrics, tmp_path / "m")
    pairs_ok = register.python_func(
        slide_index=index_art, registration=reg, metrics=metrics, transforms_uri=cohort.transforms
    )
    df = pd.read_csv(Path(reg.path) / "registration.csv")
    assert len(df) == 4 and pairs_ok == int(df["ok"].sum()) == 4
    m = metrics.metadata
    assert m["pairs_ok"] == 4 and m["error_um_mean"] < 50  # µm, vs the synthetic truth
    assert reg.metadata["pairs_ok"] == 4
