"""extract_features / collect_features: sharded extraction into the store, reuse on rerun, a
failed slide fails its shard after the others are stored."""

from __future__ import annotations

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


def test_shards_store_features_and_collect(chain):
    files = storage.list_uris(f"{chain['prefix']}/features/{chain['ehash']}")
    assert len(files) == 8
    feats = pd.read_csv(chain["features"].path)
    assert (feats["status"] == "extracted").all() and len(feats) == 8
    assert chain["collected"].extractor_hash == chain["ehash"]
    assert chain["collect_metrics"].metadata["slides_extracted"] == 8.0


def test_rerun_reuses_and_bad_slide_fails_shard(chain, tmp_path):
    index = pd.read_csv(chain["index"].path, dtype={"etag": str})
    index.loc[0, "slide_uri"] = str(tmp_path / "missing.svs")  # already extracted: reused
    index.loc[len(index)] = {**index.loc[1].to_dict(), "slide_id": "extra",
                             "slide_uri": str(tmp_path / "gone.svs")}  # fmt: skip
    index.to_csv(tmp_path / "index.csv", index=False)
    rep = art(dsl.Dataset, tmp_path / "rep")
    with pytest.raises(RuntimeError, match=r"1 slide\(s\) failed extraction: \['extra'\]"):
        extract_features.python_func(
            slide_index=art(dsl.Dataset, tmp_path / "index.csv"), shard=0, num_shards=1,
            project_prefix=chain["prefix"], shard_report=rep, **TINY_EXTRACT,
        )  # fmt: skip
    table = pd.read_csv(tmp_path / "rep")
    assert (table.set_index("slide_id").drop("extra")["status"] == "reused").all()
    assert rep.metadata["failed"] == 1 and rep.metadata["reused"] == 8
