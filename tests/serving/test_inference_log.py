"""InferenceLogger: records land where drift monitoring reads them; a down store loses nothing."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from serving_fixtures import LOG_BUCKET

from cscl.inference_log import InferenceLogger, make_record, record_uri, uri_hash
from cscl.io.storage import Store

ANSWER = {
    "model_name": "cscl",
    "model_version": "0.1.0+test",
    "slide_id": "case001_HE",
    "n_patches": 3,
    "embedding": [0.1, 0.2],
    "predictions": {"er_status": {"negative": 0.4, "positive": 0.6}},
    "qc": {"tissue_area_mm2": 1.0, "mpp": 0.5, "od_mean": [0.1] * 3, "od_std": [0.01] * 3},
}


def test_record_has_contract_fields_and_no_uri():
    when = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
    rec = make_record(ANSWER, "req-1", uri="s3://b/patient_smith/slide.svs", when=when)
    assert {"request_id", "time", "model_version", "embedding", "predictions", "qc"} <= set(rec)
    assert rec["uri_hash"] == uri_hash("s3://b/patient_smith/slide.svs")
    assert "smith" not in json.dumps(rec) and "slide_id" not in rec
    assert record_uri("s3://b/p/", rec) == "s3://b/p/inference-logs/date=2026-11-23/req-1.json"
    assert make_record(ANSWER, "r2")["slide_id"] == "case001_HE"


def test_logs_to_s3_and_monitoring_reads_them(s3):
    from cscl.monitoring.logs import logs_root

    lg = InferenceLogger(f"s3://{LOG_BUCKET}/proj", store=Store(s3["endpoint"]))
    uris = [lg.log(make_record(ANSWER, f"req-{i}")) for i in range(5)]
    assert lg.flush(20)
    assert lg.stats() == {"queued": 5, "written": 5, "failed_attempts": 0, "pending": 0,
                          "dropped": 0, "unserialisable": 0}  # fmt: skip
    day = dt.datetime.now(dt.UTC).date().isoformat()
    keys = {o["Key"] for o in s3["client"].list_objects_v2(
        Bucket=LOG_BUCKET, Prefix="proj/inference-logs/")["Contents"]}  # fmt: skip
    assert {f"proj/inference-logs/date={day}/req-{i}.json" for i in range(5)} <= keys
    body = s3["client"].get_object(Bucket=LOG_BUCKET, Key=uris[0].split("/", 3)[3])["Body"]
    assert json.loads(body.read())["predictions"] == ANSWER["predictions"]
    assert logs_root(f"s3://{LOG_BUCKET}/proj") == f"s3://{LOG_BUCKET}/proj/inference-logs"
    lg.close()


def test_store_down_never_blocks_and_records_are_retried(tmp_path):
    """Endpoint down: log() returns at once, failures are counted; when it comes back the kept
    records are written."""
    from moto.server import ThreadedMotoServer

    from cscl.io.storage import s3_client
    from cscl_platform.serving.server import free_ports

    port = free_ports(1)[0]
    endpoint = f"http://127.0.0.1:{port}"
    lg = InferenceLogger(
        "s3://late-bucket/p", store=Store(endpoint), retry_initial=0.05, retry_max=0.2
    )
    for i in range(3):  # log() hands the record over and returns: nothing is written yet
        assert lg.log(make_record(ANSWER, f"down-{i}")) is not None
    assert lg.stats()["written"] == 0
    deadline = time.monotonic() + 60  # bounded wait for the writer to fail (machine may be busy)
    while lg.stats()["failed_attempts"] < 3 and time.monotonic() < deadline:
        lg.flush(0.2)
    st = lg.stats()  # a record being retried right now is still pending
    assert st["failed_attempts"] >= 3 and st["pending"] == 3 and st["written"] == 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3_client(endpoint).create_bucket(Bucket="late-bucket")
        assert lg.flush(20)
        assert lg.stats()["written"] == 3 and lg.stats()["pending"] == 0
        got = s3_client(endpoint).list_objects_v2(Bucket="late-bucket")["KeyCount"]
        assert got == 3
    finally:
        lg.close(1)
        server.stop()


def test_bounded_queue_drops_and_counts(tmp_path):
    lg = InferenceLogger(str(tmp_path / "logs"), max_queue=2)
    with lg._cond:  # hold the writer so the queue fills
        results = [lg.log(make_record(ANSWER, f"q-{i}")) for i in range(4)]
    assert results[2:] == [None, None] and lg.stats()["dropped"] == 2
    assert lg.flush(10)
    written = sorted(p.name for p in (tmp_path / "logs" / "inference-logs").rglob("*.json"))
    assert written == ["q-0.json", "q-1.json"]
    lg.close()


@pytest.mark.parametrize("bad", [float("nan"), object()])
def test_unserialisable_record_is_counted_not_raised(tmp_path, bad):
    lg = InferenceLogger(str(tmp_path))
    assert lg.log(make_record({**ANSWER, "embedding": [bad]}, "nan")) is None
    assert lg.stats()["unserialisable"] == 1 and lg.flush(5)
    lg.close()


def test_a_record_being_written_counts_as_pending(tmp_path, monkeypatch):
    """stats() while the writer is inside a write: the record is neither lost nor written."""
    import threading

    from cscl.io import storage

    entered, release = threading.Event(), threading.Event()
    real = storage.write_bytes

    def slow_write(uri, data, *a, **kw):
        entered.set()
        assert release.wait(10)
        return real(uri, data, *a, **kw)

    monkeypatch.setattr(storage, "write_bytes", slow_write)
    lg = InferenceLogger(str(tmp_path))
    lg.log(make_record(ANSWER, "in-flight"))
    assert entered.wait(10)
    assert lg.stats()["pending"] == 1 and lg.stats()["written"] == 0
    release.set()
    assert lg.flush(10) and lg.stats()["pending"] == 0 and lg.stats()["written"] == 1
    lg.close()
