"""A real TorchServe (Java frontend + Python worker) serving the packaged tiny model.

One server for the module (starting one takes ~20 s on 2 cores). Inference logs go to their own
loopback S3 server so the last test can take it down without disturbing the data bucket.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

import pytest
import requests
import serving_fixtures as fx
from serving_fixtures import DATA_BUCKET, LOG_BUCKET

from cscl_platform.serving.client import ServingClient, ServingError

pytestmark = pytest.mark.torchserve


@pytest.fixture(scope="module")
def log_s3():
    from cscl.io.loopback_s3 import local_s3

    with local_s3(buckets=(LOG_BUCKET,)) as server:
        yield {"server": server, "port": server.port, "endpoint": server.endpoint}


@pytest.fixture(scope="module")
def ts(packaged, made, slide, s3, log_s3, tmp_path_factory):
    from cscl_platform.serving.server import start_torchserve

    client = s3["client"]
    client.upload_file(str(made["features"] / "case005_HE.h5"), DATA_BUCKET, "feat/case005_HE.h5")
    client.upload_file(str(slide), DATA_BUCKET, "slides/tiny_HE.svs")
    env = {
        "CSCL_ALLOWED_PREFIXES": f"s3://{DATA_BUCKET}/,{made['features']},{slide.parent}",
        "CSCL_INFERENCE_LOG_URI": f"s3://{LOG_BUCKET}/proj",
        "CSCL_S3_ENDPOINT": s3["endpoint"],  # data
        "CSCL_MAX_UPLOAD_BYTES": str(1_000_000),
        "CSCL_MAX_PATCHES": str(1_000),  # the tiny slide has < 100 patches, its feature files 40
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    # logs have their own endpoint in this test: the data endpoint stays up when logs go down
    env["CSCL_INFERENCE_LOG_ENDPOINT"] = log_s3["endpoint"]
    inst = start_torchserve(
        packaged["store"],
        {"cscl": "cscl.mar"},
        workdir=tmp_path_factory.mktemp("ts"),
        env=env,
        max_request_size=4_000_000,
        ready_timeout=240,
    )
    yield inst
    inst.stop()
    assert not inst.alive()


@pytest.fixture(scope="module")
def client(ts):
    return ServingClient(ts.inference_url, "cscl", key_file=ts.key_file, retries=2, backoff=0.2)


def _error(client, fn, *a) -> ServingError:
    with pytest.raises(ServingError) as ei:
        fn(*a)
    return ei.value


def test_config_is_loopback_with_token_auth_and_no_model_api(ts):
    lines = [ln for ln in ts.config_path.read_text().splitlines() if not ln.startswith("#")]
    cfg = dict(ln.split("=", 1) for ln in lines if "=" in ln)
    assert "disable_token_authorization" not in cfg and cfg["enable_model_api"] == "false"
    for key in ("inference_address", "management_address", "metrics_address"):
        assert cfg[key].startswith("http://127.0.0.1:")
    keys = ts.keys()
    assert set(keys) == {"inference", "management"}
    mgmt = {"Authorization": f"Bearer {keys['management']}"}
    r = requests.post(f"{ts.management_url}/models?url=cscl.mar", headers=mgmt, timeout=10)
    assert r.status_code == 405  # registering models is off
    r = requests.delete(f"{ts.management_url}/models/cscl", headers=mgmt, timeout=10)
    assert r.status_code == 405  # so is unregistering
    m = requests.get(f"{ts.metrics_url}/metrics", timeout=10)
    assert m.status_code == 200 and "# TYPE" in m.text  # Prometheus format


def test_management_api_scaling_needs_the_management_key(ts):
    """TorchServe 0.12's model-API switch covers register/unregister only: scaling workers stays
    a management call (serving/README.md). It answers only the management key, on loopback."""
    url = f"{ts.management_url}/models/cscl?min_worker=1&max_worker=1&synchronous=true"
    keys = ts.keys()
    for headers in ({}, {"Authorization": f"Bearer {keys['inference']}"}):
        r = requests.put(url, headers=headers, timeout=30)
        assert r.status_code == 400 and "Token Authorization failed" in r.json()["message"]
    r = requests.put(url, headers={"Authorization": f"Bearer {keys['management']}"}, timeout=60)
    assert r.status_code in (200, 202)  # the holder of the management key may scale
    assert len(ts.worker_pids("cscl")) == 1


def test_hostile_requests_are_bounded(client, made, slide, tmp_path):
    """Deep JSON is a 400 (not a 500), an absurd mpp a 400, a slide or feature file above the
    request budget a 413 naming the limit; the worker answers the next request at once."""
    import h5py

    deep = b"[" * 100_000 + b"]" * 100_000
    for body in (deep, b'{"slide_uri": ' + b"[" * 3_000 + b"]" * 3_000 + b"}"):
        e = _error(client, client.predict_features_bytes, body)
        assert e.status == 400 and "nested deeper" in str(e)
        r = client.session.post(f"{client.url}/predictions/cscl", data=body, timeout=60,
                                headers=client._headers("application/json"))  # fmt: skip
        assert r.status_code == 400, r.text
    e = _error(client, client.predict_slide_uri, str(slide), 50.0)
    assert e.status == 400 and "'mpp' must be" in str(e)
    t0 = time.monotonic()
    e = _error(client, client.predict_slide_uri, str(slide), 5.0)  # 13 px patches: thousands
    assert e.status == 413 and "limit of 1000" in str(e)
    bomb = tmp_path / "bomb.h5"
    with h5py.File(bomb, "w") as f:  # 200k patches of zeros: KiBs that inflate to 77 MB
        f.create_dataset("features", shape=(200_000, fx.DIM), dtype="float32",
                         compression="gzip", chunks=(4096, fx.DIM), fillvalue=0)  # fmt: skip
    e = _error(client, client.predict_features_file, bomb)
    assert e.status == 413 and "200000 patches" in str(e)
    assert time.monotonic() - t0 < 60
    assert client.predict_features_file(made["features"] / "case002_HE.h5")["n_patches"] == 40


def test_token_is_required(ts, made):
    url = f"{ts.inference_url}/predictions/cscl"
    body = (made["features"] / "case000_HE.h5").read_bytes()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = requests.post(url, data=body, headers=headers, timeout=30)
        # TorchServe 0.12 answers a missing/wrong token with 400 InvalidKeyException
        assert r.status_code in (400, 401, 403)
        assert "Token Authorization failed" in r.json()["message"]
    ok = ServingClient(ts.inference_url, key_file=ts.key_file).predict_features_bytes(body)
    assert ok["slide_id"] == "case000_HE"


def test_features_upload_and_uris(client, made, packaged):
    from cscl.features import read_features
    from cscl.inference import Predictor

    up = client.predict_features_file(made["features"] / "case001_HE.h5")
    local = client.predict_features_uri(str(made["features"] / "case001_HE.h5"))
    remote = client.predict_features_uri(f"s3://{DATA_BUCKET}/feat/case005_HE.h5")
    assert up["model_version"] == "0.1.0+test" and up["input"] == "upload"
    assert up["embedding"] == local["embedding"] and up["predictions"] == local["predictions"]
    assert remote["slide_id"] == "case005_HE"
    # served == in-process
    here = Predictor(packaged["bundle"]).predict_features(
        read_features(made["features"] / "case001_HE.h5")
    )
    for task, probs in here["predictions"].items():
        assert up["predictions"][task] == pytest.approx(probs)
    assert up["top_patches"] == here["top_patches"]


def test_slide_uri_local_and_s3(client, slide):
    a = client.predict_slide_uri(str(slide))
    b = client.predict_slide_uri(f"s3://{DATA_BUCKET}/slides/tiny_HE.svs")
    assert a["n_patches"] > 0 and a["qc"]["tissue_area_mm2"] > 0 and a["qc"]["mpp"] == 0.5
    assert a["embedding"] == pytest.approx(b["embedding"], abs=1e-6)
    assert {"x", "y", "attention"} == set(a["top_patches"][0])


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (b"{not json", 400, "neither valid JSON"),
        (json.dumps({"slide_uri": "s3://x/y", "extra": 1}), 400, "unknown field(s) ['extra']"),
        (json.dumps({}), 400, "exactly one of"),
        (json.dumps({"slide_uri": "s3://other-bucket/a.svs"}), 403, "outside the allowed"),
        (json.dumps({"features_uri": "/etc/passwd"}), 403, "outside the allowed"),
        (json.dumps({"features_uri": f"s3://{DATA_BUCKET}/feat/missing.h5"}), 404, "not found"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, 422, "cannot read feature file the uploaded file"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 1_200_000, 413, "exceeds the limit"),
    ],
)
def test_bad_requests_get_4xx_naming_the_problem(client, payload, status, words):
    body = payload if isinstance(payload, bytes) else payload.encode()
    err = _error(client, client.predict_features_bytes, body)
    assert err.status == status, str(err)
    assert words in str(err)


def test_bad_files_get_4xx(client, made, slide, tmp_path):
    rng = __import__("numpy").random.default_rng(3)
    wrong_dim = fx.feature_file(tmp_path / "w.h5", "w", rng, dim=32).read_bytes()
    empty = fx.feature_file(tmp_path / "e.h5", "e", rng, n=0).read_bytes()
    e = _error(client, client.predict_features_bytes, wrong_dim)
    assert e.status == 422 and "feature dimension 32 but model" in str(e)
    e = _error(client, client.predict_features_bytes, empty)
    assert e.status == 422 and "no patches" in str(e)
    corrupt = slide.parent / "corrupt_HE.svs"
    corrupt.write_bytes(slide.read_bytes()[:5000])
    e = _error(client, client.predict_slide_uri, str(corrupt))
    assert e.status == 422 and "corrupt_HE.svs" in str(e)
    blank = slide.parent / "blank_HE.svs"
    _blank_slide(blank)
    e = _error(client, client.predict_slide_uri, str(blank))
    assert e.status == 422 and ("tissue" in str(e))
    # the worker survived every bad request
    assert client.predict_features_file(made["features"] / "case002_HE.h5")["n_patches"] == 40


def _blank_slide(path):
    """An all-white Aperio slide (no tissue), written like the synthetic ones."""
    import numpy as np
    import tifffile

    img = np.full((512, 512, 3), 245, np.uint8)
    desc = "Aperio Image Library v12.0.0\r\n512x512 [0,0 512x512] (256x256) JPEG/RGB Q=90|AppMag = 20|MPP = 0.5"
    with tifffile.TiffWriter(path) as w:
        w.write(img, tile=(256, 256), compression="jpeg", description=desc, metadata=None)
        w.write(img[::4, ::4], tile=(128, 128), compression="jpeg", metadata=None,
                subfiletype=1)  # fmt: skip


def test_bad_requests_do_not_fail_their_batch(client, made):
    """Good and bad requests batched together: each gets its own status (not one for all)."""
    good = (made["features"] / "case003_HE.h5").read_bytes()

    def call(i):
        try:
            return client.predict_features_bytes(good if i % 2 == 0 else b'{"zz": 1}')
        except ServingError as exc:
            return exc.status

    with cf.ThreadPoolExecutor(8) as ex:
        out = list(ex.map(call, range(8)))
    assert all(isinstance(o, dict) for o in out[::2]) and out[1::2] == [400] * 4
    assert max(o["batch_size"] for o in out[::2]) > 1  # they really were batched


def test_cli_predict_against_server(ts, made, capsys):
    from cscl.cli import main

    f = made["features"] / "case004_HE.h5"
    argv = ["predict", "--url", ts.inference_url, "--key-file", str(ts.key_file), "--features",
            str(f), "--compact"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["slide_id"] == "case004_HE"
    argv = ["predict", "--url", ts.inference_url, "--key-file", str(ts.key_file),
            "--features-uri", "/etc/passwd"]  # fmt: skip
    assert main(argv) == 2
    assert "outside the allowed locations" in capsys.readouterr().err


def test_worker_restart_recovers(ts, made):
    import os
    import signal

    # A request that reaches the frontend while the worker is dying can be dropped by
    # TorchServe without an answer: a short client timeout lets the loop retry it.
    client = ServingClient(ts.inference_url, "cscl", key_file=ts.key_file, retries=1, timeout=20)
    (pid,) = ts.worker_pids("cscl")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:  # bounded: the frontend restarts the worker with backoff
        try:
            out = client.predict_features_file(made["features"] / "case006_HE.h5")
            break
        except ServingError:
            assert time.monotonic() < deadline, "worker did not come back within 120 s"
    assert out["slide_id"] == "case006_HE"
    assert ts.worker_pids("cscl") != [pid]


def _log_keys(log_s3) -> set[str]:
    from cscl.io.storage import Store

    resp = Store(log_s3["endpoint"]).client().list_objects_v2(Bucket=LOG_BUCKET, Prefix="proj/")
    return {o["Key"] for o in resp.get("Contents", [])}


def _wait_for(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_inference_logs_written_and_store_outage_does_not_fail_requests(client, made, log_s3):
    from cscl.io.storage import Store

    out = client.predict_features_file(made["features"] / "case007_HE.h5")
    rid = out["request_id"]
    _wait_for(lambda: any(k.endswith(f"/{rid}.json") for k in _log_keys(log_s3)))
    key = next(k for k in _log_keys(log_s3) if k.endswith(f"/{rid}.json"))
    assert key.startswith("proj/inference-logs/date=")
    rec = json.loads(Store(log_s3["endpoint"]).client().get_object(Bucket=LOG_BUCKET, Key=key)["Body"]
                     .read())  # fmt: skip
    assert rec["model_version"] == "0.1.0+test" and rec["slide_id"] == "case007_HE"
    assert rec["embedding"] == out["embedding"] and rec["predictions"] == out["predictions"]
    assert rec["qc"] == out["qc"]
    # the log store goes down: requests still succeed (how fast is benchmarks/serve.py's job)
    log_s3["server"].stop()
    during = [client.predict_features_file(made["features"] / "case008_HE.h5") for _ in range(3)]
    assert all(d["slide_id"] == "case008_HE" for d in during)
    # it comes back: the records kept during the outage are written
    log_s3["server"].start()  # on the same port
    client.predict_features_file(made["features"] / "case009_HE.h5")
    want = {d["request_id"] for d in during}
    _wait_for(lambda: want <= {k.rsplit("/", 1)[-1][:-5] for k in _log_keys(log_s3)}, 60)
