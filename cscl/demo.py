"""`make demo`: the whole training pipeline on one machine, against a real S3 API on loopback."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "demo-not-a-secret",
    "AWS_SECRET_ACCESS_KEY": "demo-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def local_s3(set_env: bool = True) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 (a free port); yield its endpoint URL.

    Not a mock: boto3 speaks HTTP S3 to it exactly as to AWS or MinIO. With `set_env` the dummy
    credentials and AWS_ENDPOINT_URL are exported for the duration (restored afterwards) so that
    kfp.local task subprocesses inherit them.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in (*DUMMY_AWS_ENV, "AWS_ENDPOINT_URL")}
    try:
        if set_env:
            os.environ.update(DUMMY_AWS_ENV)
            os.environ["AWS_ENDPOINT_URL"] = url
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
