"""extract_features / collect_features: sharded extraction into the store, reuse on rerun, a
failed slide fails its shard after the others are stored."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from kfp import dsl

from cscl.io import storage
from cscl_platform.components.conftest import TINY_EXTRACT, art
from cscl_platform.components.extract_features.component import collect_features, extract_features


def test_interface():
    spec = extract_features.component_spec
    assert spec.inputs["slide_index"].type == "system.Dataset@0.0.1"
    assert spec.outputs["shard_report"].type == "system.Dataset@0.0.1"
    reports = collect_features.component_spec.inputs["shard_reports"]
    assert reports.type == "system.Dataset@0.0.1" and reports.is_artifact_list


def test_shards_store_features_and_collect(index_art, feature_store, tmp_path):
    prefix = str(tmp_path / "store")
    reports, hashes = [], set()
    for shard in (0, 1):
        rep = art(dsl.Dataset, tmp_path / f"shard{shard}")
        hashes.add(extract_features.python_func(
            slide_index=index_art, shard=shard, num_shards=2, project_prefix=prefix,
            shard_report=rep, **TINY_EXTRACT,
        ))  # fmt: skip
        reports.append(rep)
    assert hashes == {feature_store.extractor_hash}  # same config → same hash as the library
    assert len(storage.list_uris(f"{prefix}/features/{feature_store.extractor_hash}")) == 8
    features, metrics = art(dsl.Dataset, tmp_path / "f"), art(dsl.Metrics, tmp_path / "m")
    collected = collect_features.python_func(
        shard_reports=reports, features=features, metrics=metrics
    )
    feats = pd.read_csv(features.path)
    assert (feats["status"] == "extracted").all() and len(feats) == 8
    assert collected.extractor_hash == feature_store.extractor_hash and collected.n_usable == 8
    assert metrics.metadata["slides_extracted"] == 8.0


def test_rerun_reuses_and_bad_slide_fails_shard(index_art, feature_store, tmp_path):
    store = tmp_path / "project"
    shutil.copytree(feature_store.prefix, store)  # features of every slide already stored
    index = pd.read_csv(index_art.path, dtype={"etag": str})
    index.loc[0, "slide_uri"] = str(tmp_path / "missing.svs")  # already extracted: reused
    index.loc[len(index)] = {**index.loc[1].to_dict(), "slide_id": "extra",
                             "slide_uri": str(tmp_path / "gone.svs")}  # fmt: skip
    index.to_csv(tmp_path / "index.csv", index=False)
    rep = art(dsl.Dataset, tmp_path / "rep")
    with pytest.raises(RuntimeError, match=r"1 slide\(s\) failed extraction: \['extra'\]"):
        extract_features.python_func(
            slide_index=art(dsl.Dataset, tmp_path / "index.csv"), shard=0, num_shards=1,
            project_prefix=str(store), shard_report=rep, **TINY_EXTRACT,
        )  # fmt: skip
    table = pd.read_csv(tmp_path / "rep")
    assert (table.set_index("slide_id").drop("extra")["status"] == "reused").all()
    assert rep.metadata["failed"] == 1 and rep.metadata["reused"] == 8
    # ... unless failed slides are allowed: the shard succeeds and lists it
    ok = extract_features.python_func(
        slide_index=art(dsl.Dataset, tmp_path / "index.csv"), shard=0, num_shards=1,
        project_prefix=str(store), shard_report=rep, skip_failed_slides=True, **TINY_EXTRACT,
    )  # fmt: skip
    assert ok == feature_store.extractor_hash and rep.metadata["failed"] == 1
