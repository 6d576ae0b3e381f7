"""Store extraction downloads the next slide while this one is extracted (cscl.shards prefetch):
same report and features as the sequential path, bounded scratch, failures per slide."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from cscl import shards
from cscl.ingest import ingest_cohort
from cscl.io import storage
from cscl.shards import extract_shard, extract_shard_features, features_uri
from cscl.wsi.encoders import load_encoder
from cscl.wsi.extract import extractor_hash

REUSED, MISSING, CHANGED = "case000_HER2", "case001_HE", "case002_HE"


@pytest.fixture
def index(s3_cohort):
    """The tiny cohort (6 slides) with one slide gone since ingestion and one replaced."""
    idx = ingest_cohort(s3_cohort, progress=False).index
    idx.loc[idx.slide_id == MISSING, "slide_uri"] += ".missing"
    idx.loc[idx.slide_id == CHANGED, "etag"] = "0" * 32
    return idx


def _ehash(cfg) -> str:
    enc = load_encoder(cfg.backbone, cfg.weights, cfg.allow_random, cfg.device, seed=cfg.seed)
    return extractor_hash(cfg, enc.weights_digest)


def _features(uri: str, dest: Path) -> tuple[dict, dict]:
    with h5py.File(storage.download(uri, dest)) as f:
        arrays = {k: np.asarray(f[k]) for k in ("features", "coords")}
        attrs = {k: v for k, v in f.attrs.items() if k not in ("source", "qc")}
        qc = json.loads(f.attrs["qc"])
        attrs["qc"] = {k: v for k, v in qc.items() if not k.endswith("_seconds")}  # timings
        attrs["source_bytes"] = str(f.attrs.get("source", "")).split(":")[0]
    return arrays, attrs


def test_prefetch_gives_the_sequential_report_and_features(index, tmp_path, tiny_extract_config):
    tables, ehashes = {}, {}
    for on in (False, True):
        cfg = tiny_extract_config(prefetch=on)
        prefix = f"s3://cohort-bucket/proj-prefetch-{'on' if on else 'off'}"
        ehash = _ehash(cfg)
        storage.write_bytes(features_uri(prefix, ehash, REUSED), b"reused, never downloaded")
        scratch = tmp_path / f"scratch-{on}"
        logs: list[str] = []
        stats: dict = {}
        got, rep = extract_shard_features(index, cfg, prefix, scratch, log=logs.append, stats=stats)
        assert got == ehash
        assert not list(scratch.iterdir())  # every local copy removed
        assert any(f"[reuse] {REUSED}" in line for line in logs)
        assert stats["fetch_s"] > 0 and stats["fetch_wait_s"] >= 0
        if not on:  # switched off: every download waited for when its slide is reached
            assert stats["fetched_ahead"] == 0 and stats["fetch_hidden_s"] == 0
        tables[on], ehashes[on] = rep.table, ehash
    assert ehashes[False] == ehashes[True]
    off, on = tables[False], tables[True]
    cols = [c for c in off.columns if c not in ("seconds", "features_uri")]
    pd.testing.assert_frame_equal(off[cols], on[cols])
    assert off["status"].tolist() == [
        "extracted", "reused", "failed", "extracted", "failed", "extracted",
    ]  # fmt: skip
    msg = on.set_index("slide_id")["message"]
    assert "case001_HE.svs.missing" in msg[MISSING] and "not found" in msg[MISSING]
    assert "changed since ingestion" in msg[CHANGED]
    for sid in off.loc[off.status == "extracted", "slide_id"]:
        a_arr, a_attrs = _features(
            off.set_index("slide_id").at[sid, "features_uri"], tmp_path / "a.h5"
        )
        b_arr, b_attrs = _features(
            on.set_index("slide_id").at[sid, "features_uri"], tmp_path / "b.h5"
        )
        assert a_attrs == b_attrs
        for k in a_arr:
            np.testing.assert_array_equal(a_arr[k], b_arr[k])


def _rows(index: pd.DataFrame) -> pd.DataFrame:
    good = index[~index.slide_id.isin([MISSING, CHANGED])]
    return good.sort_values("slide_id").reset_index(drop=True)


def _watch_fetches(monkeypatch) -> dict[str, threading.Event]:
    """An event per slide id, set when the real `_fetch_slide` has put it on scratch disk."""
    fetched: dict[str, threading.Event] = {}
    real = shards._fetch_slide

    def fetch(row, work):
        path = real(row, work)
        fetched.setdefault(str(row["slide_id"]), threading.Event()).set()
        return path

    monkeypatch.setattr(shards, "_fetch_slide", fetch)
    return fetched


def _extract_one_seeing(scratch: Path, seen: list):
    """An extract_one that records which slides are on scratch disk while it runs."""

    def one(local: Path, row: pd.Series, h5: Path) -> None:
        seen.append((str(row["slide_id"]), sorted(p.name for p in scratch.iterdir())))
        h5.write_bytes(b"features of " + local.name.encode())

    return one


def test_next_slide_is_downloaded_during_this_one_and_scratch_holds_two(
    index, tmp_path, s3_endpoint, monkeypatch
):
    rows = _rows(index)  # case000_HE, case000_HER2, case001_HER2, case002_HER2
    ids = rows.slide_id.tolist()
    fetched = _watch_fetches(monkeypatch)
    scratch, seen = tmp_path / "scratch", []
    record = _extract_one_seeing(scratch, seen)

    def one(local: Path, row: pd.Series, h5: Path) -> None:
        k = ids.index(row["slide_id"])
        if k + 1 < len(ids):  # the next slide arrives while this one is "extracted"
            nxt = fetched.setdefault(ids[k + 1], threading.Event())
            assert nxt.wait(timeout=60), f"{ids[k + 1]} was not fetched during {ids[k]}"
        record(local, row, h5)

    rep = extract_shard(rows, one, "hashX", "s3://cohort-bucket/proj-overlap", scratch)
    assert rep.counts() == {"extracted": 4, "reused": 0, "failed": 0}
    assert [s for s, _ in seen] == ids
    for k, (_, on_disk) in enumerate(seen):
        assert on_disk == sorted(ids[k : k + 2])  # this slide and the next: never more
    assert not list(scratch.iterdir())


def test_switched_off_downloads_each_slide_when_reached(index, tmp_path, s3_endpoint):
    rows = _rows(index)
    scratch, seen = tmp_path / "scratch", []
    stats: dict = {}
    rep = extract_shard(
        rows,
        _extract_one_seeing(scratch, seen),
        "hashY",
        "s3://cohort-bucket/proj-off",
        scratch,
        prefetch=False,
        stats=stats,
    )
    assert rep.counts()["extracted"] == 4
    assert all(on_disk == [sid] for sid, on_disk in seen)  # only the slide being extracted
    assert stats["fetched_ahead"] == 0 and stats["fetch_hidden_s"] == 0
    assert not list(scratch.iterdir())


def test_reused_slides_are_not_downloaded_and_a_stopped_shard_leaves_no_slide(
    index, tmp_path, s3_endpoint, monkeypatch
):
    rows = _rows(index)
    ids = rows.slide_id.tolist()
    prefix = "s3://cohort-bucket/proj-stop"
    storage.write_bytes(features_uri(prefix, "hashZ", ids[1]), b"x")  # the next one is reused
    fetched = _watch_fetches(monkeypatch)
    scratch = tmp_path / "scratch"

    def one(local: Path, row: pd.Series, h5: Path) -> None:
        assert fetched.setdefault(ids[2], threading.Event()).wait(timeout=60)
        raise KeyboardInterrupt  # not a slide failure: the shard stops

    with pytest.raises(KeyboardInterrupt):
        extract_shard(rows, one, "hashZ", prefix, scratch)
    assert ids[1] not in fetched  # reuse was asked before fetching
    assert not list(scratch.iterdir())  # the slide fetched ahead was removed too
