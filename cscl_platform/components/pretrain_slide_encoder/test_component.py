"""pretrain_slide_encoder component: stage 2 (any registered slide objective)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl

from cscl.errors import InputError
from cscl.train import load_trained
from cscl_platform.components.pretrain_slide_encoder.component import pretrain_slide_encoder


def test_interface():
    spec = pretrain_slide_encoder.component_spec
    assert spec.inputs["adapter"].type == "system.Model@0.0.1"
    assert spec.outputs["model"].type == "system.Model@0.0.1"


@pytest.fixture
def inputs(index_art, features_art, registration_art, adapter_art) -> dict:
    return dict(slide_index=index_art, features=features_art, registration=registration_art,
                adapter=adapter_art)  # fmt: skip


def _train(inputs: dict, out: Path, objective: str, **kw):
    model = dsl.Model(uri=str(out))
    pretrain_slide_encoder.python_func(**inputs, model=model, objective=objective, epochs=2,
                                       batch_size=4, n_tokens=32, small=True, **kw)  # fmt: skip
    return model


def test_slide_encoder_run(inputs, tmp_path):
    model = _train(inputs, tmp_path / "model", "cscl")
    cfg = json.loads((Path(model.path) / "config.json").read_text())
    assert cfg["objective"] == "cscl" and cfg["adapter"] is not None
    assert model.metadata["objective"] == "cscl"


def test_objective_parameter_selects_a_labelled_objective(inputs, cohort, tmp_path):
    """histostainalign was rejected here before (the component always called the CSCL trainer)."""
    model = _train(inputs, tmp_path / "hsa", "histostainalign", labels_uri=cohort.labels,
                   label_task="her2_status")  # fmt: skip
    m = load_trained(model.path)
    assert m.kind == "histostainalign" and m.adapter is None  # the adapter is CSCL's
    assert m.config["stains"] == ["HE", "HER2"] and m.classes == ["negative", "positive"]
    assert m.config["selection"]["method"] == "val_loss"
    assert m.config["data"]["features"] == inputs["features"].uri
    assert model.metadata["objective"] == "histostainalign"


def test_objective_errors_name_the_fix(inputs, tmp_path):
    with pytest.raises(InputError, match="label_task"):
        _train(inputs, tmp_path / "sup", "supervised")
    with pytest.raises(InputError, match="pretrain_adapter"):
        _train(inputs, tmp_path / "ad", "adapter")
