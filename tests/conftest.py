"""Shared fixtures. Heavy fixtures (synthetic cohorts, feature dirs) are session-scoped so the
suite builds them once.

S3: every test folder uses `cscl.io.loopback_s3` (moto's real S3 server on 127.0.0.1) through
these fixtures — `s3_endpoint` (one server for the session), `s3_store` (the process store
pointed at it for one test) and `s3_server` (servers of a test's own: fixed port, restarts,
buckets). Session- or module-scoped fixtures use `local_s3` / `LoopbackS3` directly.
"""

from __future__ import annotations

import os

import pytest

from cscl.io import storage
from cscl.io.loopback_s3 import LoopbackS3, dummy_credentials, local_s3

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _restore_process_store():
    """Every test ends with the process store it started with (`cscl --s3-endpoint …` run
    in-process, or a test's `configure_store`, must not leak into the next test)."""
    before = storage.current_store()
    yield
    storage.configure_store(before)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto) over HTTP on 127.0.0.1 with dummy credentials, for the session.

    tests/pipelines overrides it with `cscl_platform.demo.local_s3` (the same server, also
    exporting AWS_ENDPOINT_URL for kfp.local subprocesses)."""
    with local_s3() as s3:
        yield s3.endpoint


@pytest.fixture
def s3_store(s3_endpoint) -> storage.Store:
    """The process store pointed at the session's loopback S3 for one test."""
    return storage.configure_store(s3_endpoint)


@pytest.fixture
def s3_server():
    """Factory for S3 servers of the test's own:
    `s3_server(buckets=(), port=0, own_process=False) -> LoopbackS3`.

    Each is started (dummy credentials exported) and stopped after the test; `.stop()` and
    `.start()` simulate an outage on the same port; `port=` picks it in advance. In-process
    servers share one set of buckets; `own_process=True` gives a store with its own objects."""
    started: list[LoopbackS3] = []

    def make(buckets=(), port: int = 0, own_process: bool = False) -> LoopbackS3:
        s3 = LoopbackS3(port, buckets, own_process=own_process).start()
        started.append(s3)
        return s3

    with dummy_credentials():
        yield make
        for s3 in started:
            s3.stop()
