"""package component: bundle + .mar + model card, released under models/<name>/<version>/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl

from cscl.io import storage
from cscl_platform.components.conftest import art
from cscl_platform.components.package.component import package


def test_interface():
    spec = package.component_spec
    assert spec.outputs["bundle"].type == "system.Model@0.0.1"
    assert spec.outputs["model_card"].type == "system.Markdown@0.0.1"
    assert spec.outputs["Output"].type == "String"


@pytest.fixture(scope="module")
def packaged(chain, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("package")
    bundle, card = art(dsl.Model, tmp / "bundle"), art(dsl.Markdown, tmp / "card.md")
    uri = package.python_func(
        model=chain["model"], embeddings=chain["embeddings"], features=chain["features"],
        slide_index=chain["index"], eval_results=chain["eval_results"],
        project_prefix=chain["prefix"], bundle=bundle, model_card=card,
        labels_uri=chain["labels"], tasks=chain["tasks"], model_version="0.0.1-test",
    )  # fmt: skip
    return uri, bundle, card


def test_release_layout(packaged, chain):
    uri, bundle, card = packaged
    assert uri == f"{chain['prefix']}/models/cscl/0.0.1-test/"
    names = {Path(u).relative_to(uri).as_posix() for u in storage.list_uris(uri)}
    assert {"model.mar", "bundle/bundle.json", "model_card.md", "metrics.json"} <= names
    doc = json.loads((Path(bundle.path) / "bundle.json").read_text())
    assert doc["version"] == "0.0.1-test" and set(doc["tasks"]) == set(chain["tasks"].split(","))
    text = Path(card.path).read_text()
    assert "# Model card: cscl 0.0.1-test" in text and chain["ehash"] in text
