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


def test_slide_encoder_run(chain):
    cfg = json.loads((Path(chain["model"].path) / "config.json").read_text())
    assert cfg["objective"] == "cscl" and cfg["adapter"] is not None
    assert chain["model"].metadata["objective"] == "cscl"
    assert spec_has_curve(pretrain_slide_encoder)
    page = (chain["root"] / "a" / "model_curve.html").read_text()
    assert "data:image/png;base64," in page and "<table" in page
    assert (Path(chain["model"].path) / "history.csv").exists()


def spec_has_curve(component) -> bool:
    return component.component_spec.outputs["training_curve"].type == "system.HTML@0.0.1"


def _train(chain, out: Path, objective: str, **kw):
    model = dsl.Model(uri=str(out))
    pretrain_slide_encoder.python_func(
        slide_index=chain["index"], features=chain["features"], registration=chain["registration"],
        adapter=chain["adapter"], model=model, objective=objective,
        training_curve=dsl.HTML(uri=str(out) + "_curve.html"), epochs=2, batch_size=4,
        n_tokens=32, small=True, **kw,
    )  # fmt: skip
    return model


def test_objective_parameter_selects_a_labelled_objective(chain, tmp_path):
    """histostainalign was rejected here before (the component always called the CSCL trainer)."""
    model = _train(chain, tmp_path / "hsa", "histostainalign", labels_uri=chain["labels"],
                   label_task="her2_status")  # fmt: skip
    m = load_trained(model.path)
    assert m.kind == "histostainalign" and m.adapter is None  # the adapter is CSCL's
    assert m.config["stains"] == ["HE", "HER2"] and m.classes == ["negative", "positive"]
    assert m.config["selection"]["method"] == "val_loss"
    assert m.config["data"]["features"] == chain["features"].uri
    assert model.metadata["objective"] == "histostainalign"


def test_objective_errors_name_the_fix(chain, tmp_path):
    with pytest.raises(InputError, match="label_task"):
        _train(chain, tmp_path / "sup", "supervised")
    with pytest.raises(InputError, match="pretrain_adapter"):
        _train(chain, tmp_path / "ad", "adapter")
