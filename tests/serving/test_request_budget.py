"""Hostile requests without a server (issue 11, "Serving"): every malformed body is MALFORMED
(400), and the work one request may cause is bounded (patches, pixels, inflated bytes, time) with
TOO_LARGE (413) or INPUT (422) and a message naming the limit."""

from __future__ import annotations

import itertools
import json

import h5py
import numpy as np
import pytest
import serving_fixtures as fx

from cscl.errors import ErrorKind, InputError
from cscl.inference_request import (
    MAX_JSON_DEPTH,
    MPP_RANGE,
    Request,
    RequestPolicy,
    json_depth,
    parse_request,
)

POLICY = RequestPolicy(("s3://ok/",))


@pytest.fixture(scope="module")
def predictor(packaged):
    from cscl.inference import Predictor

    return Predictor(packaged["bundle"])


# ---- class 1: malformed bodies are 400, never a 500 from the parser ---------------------------
DEEP = [
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json.loads before the fix
    "[" * 20_000 + "]" * 20_000,  # str body (TorchServe decodes text/* itself)
    b'{"slide_uri": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    b'{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}',
    b"{" * 70_000,  # unbalanced and above the JSON size limit: still malformed
]


@pytest.mark.parametrize("body", DEEP, ids=lambda b: f"{type(b).__name__}{len(b)}")
def test_deeply_nested_json_is_malformed(body):
    with pytest.raises(InputError) as ei:
        parse_request(body, POLICY)
    assert ei.value.kind == ErrorKind.MALFORMED and "nested deeper" in str(ei.value)


def test_decoded_nested_objects_are_malformed_too():
    """TorchServe json-decodes application/json bodies before the handler sees them."""
    value: object = "s3://ok/x.svs"
    for _ in range(50):
        value = [value]
    with pytest.raises(InputError) as ei:
        parse_request({"slide_uri": value}, POLICY)
    assert ei.value.kind == ErrorKind.MALFORMED


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth('{"slide_uri": "s3://ok/[[[[[[[[[[[[.svs", "x": "\\"{{{{{{{{{{"}') == 1
    assert json_depth("[[[]]]") == 3 and MAX_JSON_DEPTH >= 2


def test_oversized_json_is_too_large_and_odd_values_stay_short():
    with pytest.raises(InputError) as ei:
        parse_request(json.dumps({"slide_uri": "s3://ok/" + "a" * 100_000}), POLICY)
    assert ei.value.kind == ErrorKind.TOO_LARGE and "exceeds the limit" in str(ei.value)
    with pytest.raises(InputError) as ei:
        parse_request({"slide_uri": "s3://ok/x", "mpp": "9" * 10_000}, POLICY)
    assert ei.value.kind == ErrorKind.MALFORMED and len(str(ei.value)) < 300


def test_handler_answers_every_malformed_row_with_400():
    from cscl_platform.serving.handler import error_body, parse_rows

    rows = [{"body": b} for b in DEEP] + [{"body": b"\xff\xfe"}, {"body": b"null"}]
    assert [error_body(p)[0] for p in parse_rows(rows, POLICY)] == [400] * len(rows)


# ---- class 2: a whole-slide request's work is bounded ---------------------------------------
@pytest.mark.parametrize("mpp", [0.0, 0.05, 11, 99.0, 352.8, float("nan"), True, "0.5"])
def test_mpp_outside_a_microscope_range_is_refused(mpp):
    lo, hi = MPP_RANGE
    with pytest.raises(InputError) as ei:
        parse_request({"slide_uri": "s3://ok/x.svs", "mpp": mpp}, POLICY)
    assert ei.value.kind == ErrorKind.MALFORMED and f"[{lo}, {hi}]" in str(ei.value)
    assert parse_request({"slide_uri": "s3://ok/x.svs", "mpp": 0.25}, POLICY).mpp == 0.25


def _slide_error(predictor, slide, mpp=None, **budget) -> InputError:
    results = predictor.run(
        [Request("slide_uri", uri=str(slide), mpp=mpp)], policy=RequestPolicy(**budget)
    )
    assert not results[0].ok, "the request should have been refused"
    return results[0].error


def test_a_slide_whose_grid_explodes_is_refused_before_the_grid(predictor, slide):
    # 10 µm/px claimed for a 0.5 µm/px slide: 6 px patches, 21,760 grid positions
    err = _slide_error(predictor, slide, mpp=10.0, max_patches=500)
    assert err.kind == ErrorKind.TOO_LARGE
    assert "patch positions" in str(err) and "limit of 500 patches" in str(err)


def test_patch_count_and_pixels_are_bounded(predictor, slide):
    err = _slide_error(predictor, slide, max_patches=3)
    assert err.kind == ErrorKind.TOO_LARGE and "tissue patches, above" in str(err)
    assert str(slide) in str(err) and "cscl extract" in str(err)
    err = _slide_error(predictor, slide, max_read_pixels=64 * 64)
    assert err.kind == ErrorKind.TOO_LARGE and "pixels read" in str(err)
    # within the defaults the same slide is answered
    assert predictor.run([Request("slide_uri", uri=str(slide))])[0].ok


def test_the_deadline_is_checked_inside_the_feature_loop(predictor, slide, monkeypatch):
    import cscl.inference

    ticks = itertools.count()
    calls = []

    def clock():
        calls.append(1)
        return float(next(ticks))

    monkeypatch.setattr(cscl.inference.time, "monotonic", clock)
    # deadline at tick 2.5: the grid check (tick 1) and the first batch (tick 2) pass
    pre = dict(predictor.pre, batch_size=4)
    monkeypatch.setattr(predictor, "pre", pre)
    err = _slide_error(predictor, slide, max_seconds=2.5)
    assert err.kind == ErrorKind.TOO_LARGE and "2.5 s per whole-slide request" in str(err)
    assert len(calls) == 4  # start, grid, batch 1 (in time), batch 2 (late)


def test_an_uncalibrated_slide_is_an_input_error(predictor, tmp_path):
    """A TIFF with the 72 dpi default resolution tags: 352.8 µm/px if believed."""
    import tifffile

    path = tmp_path / "uncalibrated.tif"
    img = np.full((512, 512, 3), 200, np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), resolution=(72, 72), resolutionunit="INCH",
                     metadata=None)  # fmt: skip
    res = predictor.run([Request("slide_uri", uri=str(path))], policy=RequestPolicy())[0]
    assert res.error is not None and res.error.kind == ErrorKind.INPUT, res.error
    assert "resolution" in str(res.error) or "µm/px" in str(res.error)


# ---- class 3: a gzip bomb of features is refused from the HDF5 metadata ----------------------
def _bomb(path, n=200_000, dim=fx.DIM):
    """n patches of zeros, gzip-compressed: a few hundred KiB that inflate to n*dim*4 bytes."""
    with h5py.File(path, "w") as f:
        f.create_dataset("features", shape=(n, dim), dtype="float32", compression="gzip",
                         chunks=(min(n, 4096), dim), fillvalue=0)  # fmt: skip
        f.create_dataset("coords", shape=(n, 2), dtype="int64", compression="gzip",
                         chunks=(min(n, 65536), 2), fillvalue=0)  # fmt: skip
    return path


def test_a_gzip_bomb_upload_is_refused_without_inflating_it(tmp_path):
    body = _bomb(tmp_path / "bomb.h5").read_bytes()
    assert len(body) < 2 * 1024 * 1024
    with pytest.raises(InputError) as ei:
        parse_request(body, RequestPolicy())
    assert ei.value.kind == ErrorKind.TOO_LARGE
    assert "200000 patches" in str(ei.value) and "the uploaded file" in str(ei.value)
    small = _bomb(tmp_path / "wide.h5", n=1000, dim=4096).read_bytes()
    with pytest.raises(InputError) as ei:
        parse_request(small, RequestPolicy(max_decompressed_bytes=1_000_000))
    assert ei.value.kind == ErrorKind.TOO_LARGE and "expands to" in str(ei.value)


def test_a_referenced_gzip_bomb_is_refused(predictor, tmp_path):
    bomb = _bomb(tmp_path / "bomb.h5")
    policy = RequestPolicy((str(tmp_path),))
    [res] = predictor.run([parse_request({"features_uri": str(bomb)}, policy)], policy=policy)
    assert res.error is not None and res.error.kind == ErrorKind.TOO_LARGE
    assert str(bomb) in str(res.error) and "patches" in str(res.error)


def test_handler_settings_carry_the_budget():
    from cscl_platform.serving.handler import Settings

    s = Settings.load({"handler": {"max_seconds": 30}}, {"CSCL_MAX_PATCHES": "1000"})
    assert s.policy.max_patches == 1000 and s.policy.max_seconds == 30.0
    assert s.policy.max_decompressed_bytes == RequestPolicy().max_decompressed_bytes
