"""cscl.ingest against a real S3 API (moto server over HTTP on loopback)."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from cscl.errors import InputError, StorageError
from cscl.ingest import ingest_cohort, read_index, upload_folder, write_index
from cscl.io import storage


def _cohort(tmp_path, n_cases=3, ihc=("HER2",)):
    folder = tmp_path / "cohort"
    (folder / "slides").mkdir(parents=True)
    rows = []
    for i in range(n_cases):
        for stain in ("HE", *ihc):
            name = f"case{i:03d}_{stain}.svs"
            (folder / "slides" / name).write_bytes(f"slide {i} {stain}".encode() * (i + 1))
            rows.append({"case_id": f"case{i:03d}", "stain": stain, "slide_uri": f"slides/{name}"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder


def test_ingest_resolves_relative_uris_and_records_size_etag(tmp_path, s3_endpoint, bucket):
    folder = _cohort(tmp_path)
    upload_folder(folder, f"s3://{bucket}/proj/cohorts/c1")
    res = ingest_cohort(f"s3://{bucket}/proj/cohorts/c1/manifest.csv")
    assert res.n_slides == 6 and res.n_cases == 3 and not res.missing
    row = res.index.set_index("slide_id").loc["case002_HER2"]
    assert row.slide_uri == f"s3://{bucket}/proj/cohorts/c1/slides/case002_HER2.svs"
    local = folder / "slides" / "case002_HER2.svs"
    assert row["size"] == local.stat().st_size
    import hashlib

    assert row.etag == hashlib.md5(local.read_bytes()).hexdigest()
    out = write_index(res.index, tmp_path / "index.csv")
    back = read_index(out)
    assert list(back["slide_id"]) == list(res.index["slide_id"])


def test_missing_objects_are_all_named(tmp_path, s3_endpoint, bucket):
    folder = _cohort(tmp_path)
    (folder / "slides" / "case001_HE.svs").unlink()
    (folder / "slides" / "case002_HER2.svs").unlink()
    upload_folder(folder, f"s3://{bucket}/c")
    with pytest.raises(StorageError) as err:
        ingest_cohort(f"s3://{bucket}/c/manifest.csv")
    msg = str(err.value)
    assert "2 of 6 slide(s)" in msg
    assert f"s3://{bucket}/c/slides/case001_HE.svs" in msg
    assert f"s3://{bucket}/c/slides/case002_HER2.svs" in msg
    res = ingest_cohort(f"s3://{bucket}/c/manifest.csv", allow_missing=True)
    assert res.n_slides == 4 and len(res.missing) == 2


def test_missing_manifest_key_and_bucket(s3_endpoint, bucket):
    with pytest.raises(StorageError, match=rf"object s3://{bucket}/nope/manifest.csv not found"):
        ingest_cohort(f"s3://{bucket}/nope/manifest.csv")
    with pytest.raises(StorageError, match="bucket of s3://no-such-bucket-x/m.csv does not exist"):
        ingest_cohort("s3://no-such-bucket-x/m.csv")


def test_unreachable_endpoint_is_explained():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StorageError, match=f"cannot reach S3 endpoint http://127.0.0.1:{port}"):
        storage.configure_store(f"http://127.0.0.1:{port}")  # tests/conftest.py restores it
        ingest_cohort("s3://b/m.csv", progress=False)


def test_wrong_credentials_are_explained(tmp_path, s3_endpoint, bucket):
    """moto accepts any key by default; `/moto-api/reset-auth 0` makes it check keys from now on."""
    import requests

    folder = _cohort(tmp_path, n_cases=1)
    upload_folder(folder, f"s3://{bucket}/c")
    requests.post(f"{s3_endpoint}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    try:
        with pytest.raises(StorageError, match="access denied .* check the S3 credentials"):
            ingest_cohort(f"s3://{bucket}/c/manifest.csv")
    finally:
        requests.post(f"{s3_endpoint}/moto-api/reset-auth", data=b"inf", timeout=5)


def test_manifest_that_fails_validation(tmp_path, s3_endpoint, bucket):
    folder = _cohort(tmp_path, n_cases=1)
    pd.DataFrame({"case_id": ["a"], "slide_uri": ["x.svs"]}).to_csv(
        folder / "manifest.csv", index=False
    )
    upload_folder(folder, f"s3://{bucket}/c")
    with pytest.raises(InputError, match=r"missing column\(s\) \['stain'\]"):
        ingest_cohort(f"s3://{bucket}/c/manifest.csv")
