"""Fixtures for platform tests: a real S3 server (moto, HTTP on 127.0.0.1) and tiny cohorts."""

from __future__ import annotations

import uuid

import pytest

from cscl.demo import local_s3


@pytest.fixture(scope="session")
def s3_endpoint():
    """One moto S3 server for the session; dummy credentials exported while it runs."""
    with local_s3() as url:
        yield url


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh, empty bucket per test so tests cannot see each other's objects."""
    from cscl.ingest import ensure_bucket

    name = f"t-{uuid.uuid4().hex[:12]}"
    ensure_bucket(name, s3_endpoint)
    return name
