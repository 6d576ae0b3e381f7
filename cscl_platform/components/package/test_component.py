"""package component: bundle + .mar + model card, released under models/<name>/<version>/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl

from cscl.eval.triage_head import DEFAULT_TRIAGE_SENSITIVITY
from cscl.io import storage
from cscl_platform.components.conftest import art
from cscl_platform.components.package.component import package


def test_interface():
    spec = package.component_spec
    assert spec.outputs["bundle"].type == "system.Model@0.0.1"
    assert spec.outputs["model_card"].type == "system.Markdown@0.0.1"
    assert spec.outputs["Output"].type == "String"
    # the served IHC triage's operating point: the library's (and `cscl package`'s) default
    assert spec.inputs["triage_sensitivity"].default == DEFAULT_TRIAGE_SENSITIVITY


@pytest.fixture(scope="module")
def packaged(model_dir, embeddings_parquet, feature_store, slide_index_csv, eval_results_dir,
             cohort, tmp_path_factory):  # fmt: skip
    tmp = tmp_path_factory.mktemp("package")
    bundle, card = art(dsl.Model, tmp / "bundle"), art(dsl.Markdown, tmp / "card.md")
    uri = package.python_func(
        model=art(dsl.Model, model_dir), embeddings=art(dsl.Dataset, embeddings_parquet),
        features=art(dsl.Dataset, feature_store.index_csv,
                     extractor_hash=feature_store.extractor_hash),
        slide_index=art(dsl.Dataset, slide_index_csv),
        eval_results=art(dsl.Dataset, eval_results_dir), project_prefix=feature_store.prefix,
        bundle=bundle, model_card=card, labels_uri=cohort.labels, tasks=cohort.tasks,
        model_version="0.0.1-test",
    )  # fmt: skip
    return uri, bundle, card


def test_release_layout(packaged, feature_store, cohort):
    uri, bundle, card = packaged
    assert uri == f"{feature_store.prefix}/models/cscl/0.0.1-test/"
    names = {Path(u).relative_to(uri).as_posix() for u in storage.list_uris(uri)}
    assert {"model.mar", "bundle/bundle.json", "model_card.md", "metrics.json"} <= names
    doc = json.loads((Path(bundle.path) / "bundle.json").read_text())
    assert doc["version"] == "0.0.1-test" and set(doc["tasks"]) == set(cohort.tasks.split(","))
    text = Path(card.path).read_text()
    assert "# Model card: cscl 0.0.1-test" in text and feature_store.extractor_hash in text
