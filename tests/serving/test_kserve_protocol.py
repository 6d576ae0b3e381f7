"""KServe's v1 (`instances` → `predictions`) and v2 (Open Inference Protocol) over a real TorchServe.

Plain HTTP (requests) speaking the documented protocols: the `kserve` and `tritonclient` clients
are not in the project's environment.
"""

from __future__ import annotations

import json

import pytest
import requests
from serving_fixtures import DATA_BUCKET

from cscl.errors import ErrorKind, InputError
from cscl.inference_request import (
    MAX_INSTANCES,
    Envelope,
    RequestPolicy,
    close_envelope,
    open_envelope,
)

POLICY = RequestPolicy(allowed_prefixes=("s3://ok/",))


def test_plain_bodies_are_our_own_form():
    for body in (b'{"features_uri": "s3://ok/a.h5"}', {"slide_uri": "s3://ok/s"}, b"\x89HDF\r\n"):
        assert open_envelope(body, POLICY) == Envelope("torchserve", (body,))


def test_v1_instances_and_v2_inputs_become_request_bodies():
    req = {"features_uri": "s3://ok/a.h5"}
    assert open_envelope({"instances": [req, req]}, POLICY).items == (req, req)
    assert open_envelope(json.dumps({"instances": [req]}).encode(), POLICY).protocol == "v1"
    v2 = {"id": "r1", "inputs": [{"name": "request", "shape": [1], "datatype": "BYTES",
                                  "data": [json.dumps(req)]}]}  # fmt: skip
    env = open_envelope(v2, POLICY)
    assert (env.protocol, env.id, env.items) == ("v2", "r1", (json.dumps(req),))
    named = {"inputs": [{"name": "slide_uri", "shape": [1], "datatype": "BYTES", "data": ["s3://ok/s"]},
                        {"name": "mpp", "shape": [1], "datatype": "FP32", "data": [0.5]}]}  # fmt: skip
    assert open_envelope(named, POLICY).items == ({"slide_uri": "s3://ok/s", "mpp": 0.5},)


@pytest.mark.parametrize(
    "body",
    [{"instances": []}, {"instances": {"a": 1}}, {"instances": [1], "x": 2}, {"inputs": []},
     {"inputs": [{"name": "request", "datatype": "FP32", "data": [1.0]}]},
     {"inputs": [{"name": "mpp", "datatype": "BYTES", "data": ["x"]}]},
     {"inputs": [{"name": "a", "datatype": "BYTES", "data": ["{}"]},
                 {"name": "b", "datatype": "BYTES", "data": ["{}"]}]}],
)  # fmt: skip
def test_broken_envelopes_are_malformed(body):
    with pytest.raises(InputError) as ei:
        open_envelope(body, POLICY)
    assert ei.value.kind == ErrorKind.MALFORMED


def test_too_many_instances_is_too_large():
    with pytest.raises(InputError) as ei:
        open_envelope({"instances": [{}] * (MAX_INSTANCES + 1)}, POLICY)
    assert ei.value.kind == ErrorKind.TOO_LARGE


def test_answers_are_wrapped_in_the_protocol_of_the_request():
    answers = [{"slide_id": "a"}, {"slide_id": "b"}]
    meta = {"model_name": "cscl", "model_version": "1"}
    assert close_envelope(Envelope("v1"), answers, **meta) == {"predictions": answers}
    v2 = close_envelope(Envelope("v2", id="r1"), answers, **meta)
    assert v2["id"] == "r1" and v2["model_name"] == "cscl"
    (out,) = v2["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [2]
    assert [json.loads(d) for d in out["data"]] == answers
    assert close_envelope(Envelope("torchserve"), answers[:1], **meta) == answers[0]


# ---- a real TorchServe ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ts(packaged, made, s3, tmp_path_factory):
    from cscl_platform.serving.server import start_torchserve

    s3["client"].upload_file(str(made["features"] / "case005_HE.h5"), DATA_BUCKET, "f/a.h5")
    env = {"CSCL_ALLOWED_PREFIXES": f"s3://{DATA_BUCKET}/", "CSCL_S3_ENDPOINT": s3["endpoint"],
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    inst = start_torchserve(packaged["store"], {"cscl": "cscl.mar"}, env=env, ready_timeout=240,
                            workdir=tmp_path_factory.mktemp("ts-kserve"))  # fmt: skip
    yield inst
    inst.stop()


@pytest.fixture(scope="module")
def http(ts):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {ts.keys()['inference']}"
    return lambda method, path, **kw: s.request(method, ts.inference_url + path, timeout=120, **kw)


FEATURES = f"s3://{DATA_BUCKET}/f/a.h5"


@pytest.mark.torchserve
def test_v2_server_health_and_metadata(http):
    assert http("GET", "/v2/health/ready").json() == {"ready": True}
    assert http("GET", "/v2/health/live").json() == {"live": True}
    assert "kserve" in http("GET", "/v2").json()["extenstion"]  # TorchServe's spelling
    # not served by TorchServe 0.12 (README: KServe's readiness probe is the pod's, not this)
    assert http("GET", "/v2/models/cscl/ready").status_code == 404


@pytest.mark.torchserve
def test_v1_predict_and_v2_infer_answer_like_predictions(http):
    plain = http("POST", "/predictions/cscl", json={"features_uri": FEATURES})
    assert plain.status_code == 200, plain.text
    inst = [{"features_uri": FEATURES}, {"features_uri": FEATURES}]
    v1 = http("POST", "/v1/models/cscl:predict", json={"instances": inst})
    assert v1.status_code == 200, v1.text
    preds = v1.json()["predictions"]
    assert len(preds) == 2 and preds[0]["embedding"] == plain.json()["embedding"]
    body = {"id": "q7", "inputs": [{"name": "request", "shape": [1], "datatype": "BYTES",
                                    "data": [json.dumps({"features_uri": FEATURES})]}]}  # fmt: skip
    v2 = http("POST", "/v2/models/cscl/infer", json=body)
    assert v2.status_code == 200, v2.text
    out = v2.json()
    assert out["id"] == "q7" and out["model_name"] == "cscl"
    assert json.loads(out["outputs"][0]["data"][0])["embedding"] == plain.json()["embedding"]
    named = {"inputs": [{"name": "features_uri", "shape": [1], "datatype": "BYTES",
                         "data": [FEATURES]}]}  # fmt: skip
    assert http("POST", "/v2/models/cscl/infer", json=named).status_code == 200


@pytest.mark.torchserve
def test_kserve_errors_keep_our_statuses(http):
    r = http("POST", "/v1/models/cscl:predict", json={"instances": [{"features_uri": "s3://x/y"}]})
    assert r.status_code == 403 and "outside" in r.json()["error"]
    r = http("POST", "/v2/models/cscl/infer", json={"inputs": []})
    assert r.status_code == 400 and r.json()["kind"] == "malformed"
