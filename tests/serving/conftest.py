"""Session fixtures for the serving tests: a tiny packaged model, a loopback S3, one TorchServe."""

from __future__ import annotations

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
    from cscl.io.loopback_s3 import local_s3

    with local_s3(buckets=(LOG_BUCKET, DATA_BUCKET)) as server:
        yield {"endpoint": server.endpoint, "server": server, "client": server.client(),
               "port": server.port}  # fmt: skip
