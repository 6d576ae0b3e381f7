"""Requests and results without a server: parse_request's error kinds, Predictor.run's one Result
per request, and the handler's kind → HTTP status table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import serving_fixtures as fx

from cscl.errors import CsclError, ErrorKind, InputError, StorageError
from cscl.inference_request import HDF5_MAGIC, Request, RequestPolicy, parse_request


@pytest.fixture(scope="module")
def predictor(packaged):
    from cscl.inference import Predictor

    return Predictor(packaged["bundle"])


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (b"", ErrorKind.MALFORMED, "empty request"),
        (b"{not json", ErrorKind.MALFORMED, "neither valid JSON"),
        ('{"slide_uri": "s3://b/x", "extra": 1}', ErrorKind.MALFORMED, "unknown field(s)"),
        ("[1]", ErrorKind.MALFORMED, "must be an object"),
        ('{"features_uri": "s3://b/f.h5", "mpp": 0.5}', ErrorKind.MALFORMED, "only goes with"),
        ('{"slide_uri": "http://host/x.svs"}', ErrorKind.MALFORMED, "unsupported URI scheme"),
        ('{"slide_uri": "s3://ok/../x.svs"}', ErrorKind.MALFORMED, "'..' path segments"),
        ('{"slide_uri": "s3://other/x.svs"}', ErrorKind.FORBIDDEN, "outside the allowed"),
        ('{"features_uri": "/etc/passwd"}', ErrorKind.FORBIDDEN, "outside the allowed"),
        (HDF5_MAGIC + b"\0" * 200, ErrorKind.TOO_LARGE, "exceeds the limit of 100 bytes"),
    ],
)
def test_parse_request_errors_carry_their_kind(body, kind, words):
    policy = RequestPolicy(("s3://ok/",), max_bytes=100)
    with pytest.raises(InputError) as ei:
        parse_request(body, policy)
    assert ei.value.kind == kind and words in str(ei.value)


def test_parse_request_forms(tmp_path):
    policy = RequestPolicy(("s3://ok/", str(tmp_path)))
    assert parse_request(HDF5_MAGIC + b"x", policy) == Request("upload", data=HDF5_MAGIC + b"x")
    req = parse_request(json.dumps({"slide_uri": "s3://ok/a.svs", "mpp": 0.25}), policy)
    assert req == Request("slide_uri", uri="s3://ok/a.svs", mpp=0.25)
    local = str(tmp_path / "f.h5")
    assert parse_request({"features_uri": local}, policy).source == "features_uri"
    with pytest.raises(InputError) as ei:  # no prefixes: uploads only
        parse_request({"features_uri": local}, RequestPolicy())
    assert ei.value.kind == ErrorKind.FORBIDDEN


def test_error_kinds_default_per_class_and_survive_renaming():
    assert InputError("x").kind == ErrorKind.INPUT
    assert StorageError("x").kind == ErrorKind.UNAVAILABLE
    assert CsclError("x").kind == ErrorKind.INTERNAL
    err = StorageError("object /tmp/abc not found", hint="h", kind=ErrorKind.NOT_FOUND)
    renamed = err.naming("/tmp/abc", "s3://b/k")
    assert type(renamed) is StorageError and renamed.kind == ErrorKind.NOT_FOUND
    assert str(renamed) == "object s3://b/k not found — h" and renamed.hint == "h"


def test_run_gives_one_result_per_request_in_order(predictor, made, slide, tmp_path):
    rng = np.random.default_rng(7)
    good = (made["features"] / "case002_HE.h5").read_bytes()
    wrong_dim = fx.feature_file(tmp_path / "w.h5", "w", rng, dim=32)
    parse_error = InputError("bad request", kind=ErrorKind.MALFORMED)
    requests = [
        Request("upload", data=good),
        parse_error,
        Request("upload", data=wrong_dim.read_bytes()),
        Request("features_uri", uri=str(made["features"] / "case003_HE.h5")),
        Request("features_uri", uri=str(tmp_path / "missing.h5")),
        Request("slide_uri", uri=str(tmp_path / "missing.svs")),
        Request("upload", data=HDF5_MAGIC + b"\0" * 64),
        Request("features_uri", uri=str(made["features"] / "case004_HE.h5")),
    ]
    results = predictor.run(requests, max_bytes=1_000_000)
    assert len(results) == len(requests)
    assert [r.ok for r in results] == [True, False, False, True, False, False, False, True]
    assert results[0].answer["slide_id"] == "case002_HE" and results[0].request is requests[0]
    assert results[1].error is parse_error
    assert results[2].error.kind == ErrorKind.INPUT and "feature dimension 32" in str(
        results[2].error
    )
    assert results[4].error.kind == ErrorKind.NOT_FOUND
    assert results[5].error.kind == ErrorKind.NOT_FOUND
    assert results[6].error.kind == ErrorKind.INPUT and "the uploaded file" in str(results[6].error)
    # batched answers equal one-at-a-time answers
    alone = predictor.run([requests[3]])[0].answer
    assert results[3].answer["embedding"] == alone["embedding"]
    big = predictor.run([requests[3]], max_bytes=10)[0]
    assert big.error.kind == ErrorKind.TOO_LARGE


def test_a_bug_is_an_internal_error_not_a_crash(predictor):
    from cscl.inference import Result

    res = Result.failed(ZeroDivisionError("boom"), Request("upload", data=b""))
    assert not res.ok and res.error.kind == ErrorKind.INTERNAL
    assert "internal error: ZeroDivisionError: boom" in str(res.error)


def test_handler_maps_every_kind_to_one_status():
    from cscl_platform.serving.handler import HTTP_STATUS, error_body, parse_rows

    assert set(HTTP_STATUS) == set(ErrorKind)
    code, body = error_body(StorageError("object s3://b/k not found", kind=ErrorKind.NOT_FOUND))
    assert code == 404 and body == {"code": 404, "kind": "not_found", "type": "StorageError",
                                    "message": "object s3://b/k not found"}  # fmt: skip
    assert error_body(StorageError("S3 down"))[0] == 502
    rows = [{"body": HDF5_MAGIC}, {"body": b"{}"}, {"data": '{"slide_uri": "s3://x/y"}'}]
    parsed = parse_rows(rows, RequestPolicy())
    assert parsed[0] == Request("upload", data=HDF5_MAGIC)
    assert [error_body(p)[0] for p in parsed[1:]] == [400, 403]
