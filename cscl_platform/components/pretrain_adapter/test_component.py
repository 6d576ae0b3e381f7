"""pretrain_adapter component: a stage-1 run dir as a `Model`."""

from __future__ import annotations

import json
from pathlib import Path

from kfp import dsl

from cscl_platform.components.conftest import art
from cscl_platform.components.pretrain_adapter.component import pretrain_adapter


def test_interface():
    spec = pretrain_adapter.component_spec
    assert spec.outputs["adapter"].type == "system.Model@0.0.1"
    assert spec.inputs["registration"].type == "system.Dataset@0.0.1"
    assert spec.inputs["epochs"].default == 120  # the paper's schedule by default


def test_adapter_run(index_art, features_art, registration_art, feature_store, tmp_path):
    adapter = art(dsl.Model, tmp_path / "adapter")
    pretrain_adapter.python_func(slide_index=index_art, features=features_art,
                                 registration=registration_art, adapter=adapter, epochs=1,
                                 batch_size=4, pairs_per_case=32)  # fmt: skip
    cfg = json.loads((Path(adapter.path) / "config.json").read_text())
    assert cfg["data"]["extractor_hash"] == feature_store.extractor_hash
    assert adapter.metadata["n_cases"] == 4
