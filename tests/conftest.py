"""Shared fixtures. Heavy fixtures (synthetic cohorts, feature dirs) are session-scoped so the
suite builds them once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto) over HTTP on 127.0.0.1 with dummy credentials.

    Shared by the test folders; tests/pipelines overrides it with `cscl_platform.demo.local_s3` (which also
    exports AWS_ENDPOINT_URL for kfp.local subprocesses)."""
    from moto.server import ThreadedMotoServer

    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
