"""ingest component: typed interface and behaviour on a local cohort (S3 cases: tests/pipelines)."""

from __future__ import annotations

import pandas as pd
import pytest
from kfp import dsl

from cscl.errors import StorageError
from cscl_platform.components.common import BASE_IMAGE
from cscl_platform.components.conftest import art
from cscl_platform.components.ingest.component import ingest


def test_interface():
    spec = ingest.component_spec
    assert spec.implementation.container.image == BASE_IMAGE
    assert spec.outputs["slide_index"].type == "system.Dataset@0.0.1"
    assert spec.outputs["Output"].type.startswith("List")  # shard ids for dsl.ParallelFor
    assert set(spec.inputs) == {"manifest_uri", "s3_endpoint", "num_shards"}


def test_index_and_shards(cohort, tmp_path):
    out = art(dsl.Dataset, tmp_path / "slide_index")
    shards = ingest.python_func(manifest_uri=cohort.manifest, slide_index=out, num_shards=2)
    index = pd.read_csv(out.path)
    assert len(index) == 8 and {"size", "etag", "slide_uri"} <= set(index.columns)
    assert shards == [0, 1]
    assert out.metadata["n_cases"] == 4 and out.metadata["n_slides"] == 8


def test_missing_slide_fails_with_its_name(tmp_path):
    (tmp_path / "m.csv").write_text("case_id,stain,slide_uri\nc1,HE,slides/nope.svs\n")
    with pytest.raises(StorageError, match="nope.svs"):
        ingest.python_func(
            manifest_uri=str(tmp_path / "m.csv"), slide_index=art(dsl.Dataset, tmp_path / "i")
        )
