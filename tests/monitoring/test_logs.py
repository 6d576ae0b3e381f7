"""Streaming log reader: bad records are skipped and counted, windows select partitions, S3 and
local give the same arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cscl.errors import InputError
from cscl.io import storage
from cscl.monitoring.logs import list_window, read_window
from cscl.monitoring.reference import load_reference
from cscl.monitoring.simulate import write_records


def _read(prefix, ref, since="2026-11-01", until="2026-11-03", **kw):
    return read_window(
        str(prefix),
        "v1",
        since,
        until,
        pred_columns=ref.pred_columns,
        embedding_dim=ref.embeddings.shape[1],
        **kw,
    )


def test_corrupt_and_partial_records_are_skipped_and_counted(tmp_path, bundle, record_model, mon):
    recs = mon.write_cohort(tmp_path, record_model, 30, seed=11)
    day = tmp_path / "inference-logs" / f"date={mon.DAY}"
    good = recs[0]

    def put(name, data):
        (day / f"{name}.json").write_bytes(
            data if isinstance(data, bytes) else json.dumps(data).encode()
        )

    put("corrupt", b'{"request_id": "x", "embedd')  # truncated write
    put("binary", b"\xff\xfe\x00garbage")
    put("list", [1, 2, 3])
    put("other-version", {**good, "request_id": "o1", "model_version": "v0"})
    put("dup", good)  # same request_id logged twice (a logger retry)
    put("no-qc", {**good, "request_id": "q1", "qc": None})
    put("qc-no-od", {**good, "request_id": "q2", "qc": {**good["qc"], "od_mean": [0.1]}})
    put("nan-area", {**good, "request_id": "q3", "qc": {**good["qc"], "tissue_area_mm2": "big"}})
    put("short-emb", {**good, "request_id": "e1", "embedding": good["embedding"][:5]})
    put("no-emb", {**good, "request_id": "e2", "embedding": None})
    put(
        "no-pred",
        {**good, "request_id": "p1", "predictions": {"subtype": good["predictions"]["subtype"]}},
    )
    put("no-id", {**good, "request_id": None})
    (day / "notes.txt").write_text("not a record")
    ref = load_reference(str(bundle))
    w = _read(tmp_path, ref, workers=4)
    assert len(w) == 30
    assert w.files == 42
    assert w.skipped == {
        "corrupt_json": 3,  # truncated, binary, a list instead of an object
        "bad_qc": 2,
        "missing_qc": 1,
        "other_model_version": 1,
        "duplicate_request": 1,
        "embedding_dim": 1,
        "missing_embedding": 1,
        "missing_predictions": 1,
        "missing_request_id": 1,
    }
    assert sum(w.skipped.values()) == 12 == w.files - len(w)
    assert w.skipped["other_model_version"] == 1 and w.skipped["duplicate_request"] == 1
    assert w.embeddings.dtype == np.float32 and w.embeddings.shape == (30, 16)
    assert w.qc_numeric.shape == (30, 8) and w.predictions.shape == (30, 6)


def test_window_selects_date_partitions(tmp_path, bundle, record_model, mon):
    mon.write_cohort(tmp_path, record_model, 5, seed=1, day="2026-10-31")
    mon.write_cohort(tmp_path, record_model, 7, seed=2, day="2026-11-01")
    mon.write_cohort(tmp_path, record_model, 9, seed=3, day="2026-11-04")
    ref = load_reference(str(bundle))
    assert len(_read(tmp_path, ref)) == 7
    assert len(_read(tmp_path / "inference-logs", ref, until="2026-11-04")) == 16
    assert len(_read(tmp_path, ref, since="2026-12-01", until="2026-12-05")) == 0
    with pytest.raises(InputError, match="ends .* before it starts"):
        list_window(str(tmp_path), "2026-11-05", "2026-11-01")
    with pytest.raises(InputError, match="not a date"):
        list_window(str(tmp_path), "yesterday", "2026-11-01")


def test_s3_and_local_read_the_same(tmp_path, bundle, record_model, mon, s3_store):
    storage.s3_client().create_bucket(Bucket="logs")
    recs = mon.write_cohort(tmp_path, record_model, 40, seed=4)
    write_records("s3://logs/proj", recs)
    ref = load_reference(str(bundle))
    a = _read(tmp_path, ref)
    b = _read("s3://logs/proj", ref, workers=8)
    assert sorted(a.request_ids) == sorted(b.request_ids) and len(b) == 40
    ia, ib = np.argsort(a.request_ids), np.argsort(b.request_ids)
    np.testing.assert_array_equal(a.embeddings[ia], b.embeddings[ib])
    np.testing.assert_array_equal(a.predictions[ia], b.predictions[ib])
