"""cscl.shards: deterministic balanced split; resumable shard extraction into S3."""

from __future__ import annotations

import h5py
import pandas as pd
import pytest

from cscl.errors import InputError
from cscl.ingest import ingest_cohort
from cscl.io import storage
from cscl.shards import (
    assign_shards,
    extract_shard_features,
    fetch_features,
    merge_reports,
    select_shard,
    shard_ids,
)


def _index(sizes):
    return pd.DataFrame(
        {
            "slide_id": [f"s{i}" for i in range(len(sizes))],
            "case_id": [f"c{i}" for i in range(len(sizes))],
            "size": sizes,
        }
    )


def test_assign_shards_balanced_and_deterministic():
    idx = _index([100, 90, 10, 10, 10, 80])
    a = assign_shards(idx, 3)
    assert a.tolist() == assign_shards(idx.sample(frac=1, random_state=1).sort_index(), 3).tolist()
    load = idx.groupby(a)["size"].sum()
    assert load.max() - load.min() <= 30
    assert shard_ids(idx, 3) == [0, 1, 2]
    assert shard_ids(idx, 50) == list(range(6))  # never more shards than slides
    assert shard_ids(idx.iloc[:0], 4) == []
    parts = [set(select_shard(idx, s, 3)["slide_id"]) for s in range(3)]
    assert set().union(*parts) == set(idx["slide_id"]) and sum(map(len, parts)) == 6
    with pytest.raises(InputError):
        assign_shards(idx, 0)


def test_extract_shard_uploads_reuses_and_reports_failures(
    s3_cohort, tmp_path, tiny_extract_config
):
    index = ingest_cohort(s3_cohort, progress=False).index
    index.loc[index.slide_id == "case001_HER2", "slide_uri"] += ".missing"  # gone since ingest
    prefix = "s3://cohort-bucket/proj-shards"
    cfg = tiny_extract_config()
    logs: list[str] = []
    ehash, rep = extract_shard_features(index, cfg, prefix, tmp_path / "scratch", log=logs.append)
    assert rep.counts() == {"extracted": 5, "reused": 0, "failed": 1}
    assert rep.failed == ["case001_HER2"]
    msg = rep.table.set_index("slide_id").loc["case001_HER2", "message"]
    assert "case001_HER2.svs.missing" in msg and "not found" in msg
    assert any("[FAIL]  case001_HER2" in line for line in logs)
    uris = storage.list_uris(f"{prefix}/features/{ehash}/")
    assert len(uris) == 5
    assert not list((tmp_path / "scratch").iterdir())  # scratch cleaned per slide
    # A rerun (e.g. after the task was killed) reuses every finished file.
    index.loc[index.slide_id == "case001_HER2", "slide_uri"] = (
        index.loc[index.slide_id == "case001_HE", "slide_uri"]
        .iloc[0]
        .replace("case001_HE", "case001_HER2")
    )
    index.loc[index.slide_id == "case001_HER2", "etag"] = ""
    _, rep2 = extract_shard_features(index, cfg, prefix, tmp_path / "scratch")
    assert rep2.counts() == {"extracted": 1, "reused": 5, "failed": 0}
    # Reports merge into one feature index; features come back with the contract's attributes.
    rep.table.to_csv(tmp_path / "a.csv", index=False)
    rep2.table.to_csv(tmp_path / "b.csv", index=False)
    merged = merge_reports([tmp_path / "b.csv"])
    local = fetch_features(merged, tmp_path / "feats")
    assert len(list(local.glob("*.h5"))) == 6
    with h5py.File(local / "case000_HE.h5") as f:
        assert f.attrs["extractor_hash"] == ehash and f["features"].shape[0] > 0


def test_changed_slide_is_caught(s3_cohort, s3_endpoint, tmp_path, tiny_extract_config):
    index = ingest_cohort(s3_cohort, progress=False).index.iloc[:1].copy()
    index["etag"] = "0" * 32
    _, rep = extract_shard_features(
        index, tiny_extract_config(), "s3://cohort-bucket/proj-etag", tmp_path
    )
    assert rep.failed == [index.slide_id.iloc[0]]
    assert "changed since ingestion" in rep.table["message"].iloc[0]


def test_cli_extract_to_store_is_the_pipeline_extraction(s3_cohort, tmp_path, capsys):
    """`cscl extract --store` and the extract_features component share extract_to_store: same
    layout `<prefix>/features/<hash>/`, same reuse on rerun."""
    from cscl.cli import main

    prefix = "s3://cohort-bucket/proj-cli"
    args = ["extract", "--manifest", s3_cohort, "--store", prefix, "--backbone", "test_resnet",
            "--random-init", "--target-mpp", "2", "--patch-size", "64", "--workers", "0",
            "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    ehash = out.split("extractor ", 1)[1].split(":", 1)[0]
    assert "6 extracted, 0 reused" in out
    assert len(storage.list_uris(f"{prefix}/features/{ehash}/")) == 6
    assert main(args) == 0
    assert "0 extracted, 6 reused" in capsys.readouterr().out
