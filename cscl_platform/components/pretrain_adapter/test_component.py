"""pretrain_adapter component: a stage-1 run dir as a `Model`."""

from __future__ import annotations

import json
from pathlib import Path

from cscl_platform.components.pretrain_adapter.component import pretrain_adapter


def test_interface():
    spec = pretrain_adapter.component_spec
    assert spec.outputs["adapter"].type == "system.Model@0.0.1"
    assert spec.inputs["registration"].type == "system.Dataset@0.0.1"
    assert spec.inputs["epochs"].default == 120  # the paper's schedule by default


def test_adapter_run(chain):
    run = Path(chain["adapter"].path)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["extractor_hash"] == chain["ehash"]
    assert chain["adapter"].metadata["n_cases"] == 4
    assert pretrain_adapter.component_spec.outputs["training_curve"].type == "system.HTML@0.0.1"
    page = (chain["root"] / "a" / "adapter_curve.html").read_text()
    assert "data:image/png;base64," in page and "loss" in page
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
