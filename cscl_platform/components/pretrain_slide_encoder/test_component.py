"""pretrain_slide_encoder component: stage 2 on the stage-1 adapter."""

from __future__ import annotations

import json
from pathlib import Path

from cscl_platform.components.pretrain_slide_encoder.component import pretrain_slide_encoder


def test_interface():
    spec = pretrain_slide_encoder.component_spec
    assert spec.inputs["adapter"].type == "system.Model@0.0.1"
    assert spec.outputs["model"].type == "system.Model@0.0.1"


def test_slide_encoder_run(chain):
    cfg = json.loads((Path(chain["model"].path) / "config.json").read_text())
    assert cfg["objective"] == "cscl" and cfg["adapter"] is not None
    assert chain["model"].metadata["objective"] == "cscl"
