"""Session fixtures for the serving tests: a tiny packaged model, a loopback S3, one TorchServe."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import serving_fixtures as fx  # noqa: E402

LOG_BUCKET = "cscl-logs"
DATA_BUCKET = "cscl-data"


@pytest.fixture(scope="session")
def made(tmp_path_factory) -> dict:
    """run dir, feature files, labels and embeddings of a tiny random-init model."""
    return fx.tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def packaged(made, tmp_path_factory) -> dict:
    """`cscl package` output: bundle dir, .mar, model store (read-only for tests)."""
    return fx.package(tmp_path_factory.mktemp("pkg"), made, extra=("--max-batch-delay", "100"))


@pytest.fixture(scope="session")
def slide(tmp_path_factory) -> Path:
    return fx.tiny_slide(tmp_path_factory.mktemp("slide"))


@pytest.fixture(scope="session")
def s3():
    """A real S3 API (moto) over HTTP on 127.0.0.1; yields (endpoint, server, boto3 client)."""
    from moto.server import ThreadedMotoServer

    from cscl.io.storage import s3_client

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = s3_client(endpoint)
    for b in (LOG_BUCKET, DATA_BUCKET):
        client.create_bucket(Bucket=b)
    yield {"endpoint": endpoint, "server": server, "client": client, "port": port}
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
