"""register component: registration table + metrics; synthetic truth gives the error."""

from __future__ import annotations

import pandas as pd

from cscl_platform.components.register.component import register


def test_interface():
    spec = register.component_spec
    assert spec.outputs["registration"].type == "system.Dataset@0.0.1"
    assert spec.outputs["metrics"].type == "system.Metrics@0.0.1"


def test_registration(chain):
    from pathlib import Path

    df = pd.read_csv(Path(chain["registration"].path) / "registration.csv")
    assert len(df) == 4 and chain["pairs_ok"] == int(df["ok"].sum()) == 4
    m = chain["reg_metrics"].metadata
    assert m["pairs_ok"] == 4 and m["error_um_mean"] < 50  # µm, vs the synthetic truth
