"""A real S3 API on 127.0.0.1 (moto's server) for the demo and the tests.

Not a mock: boto3 speaks HTTP S3 to it exactly as to AWS or MinIO. One home for starting it, so
the demo, the benchmarks and every test folder get the same thing: a free (or fixed) port,
buckets made up front, dummy credentials exported while it runs, and `stop()`/`start()` on the
same port to simulate an outage. Needs `moto[server]` (the `dev` extra).

In-process servers share moto's backends (one set of buckets per process, whatever the port);
`own_process=True` runs the server in a child process: a store of its own, and no share of our
GIL (benchmarks that time reads against it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

from cscl.io.storage import Store

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-not-a-secret",
    "AWS_SECRET_ACCESS_KEY": "testing-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LoopbackS3:
    """One moto S3 server on 127.0.0.1. `port=0` picks a free port on the first `start()`;
    later starts reuse it, so clients pointed at `endpoint` see the store come back."""

    def __init__(self, port: int = 0, buckets: Iterable[str] = (), *, own_process: bool = False):
        self.port = int(port)
        self.buckets = tuple(buckets)
        self.own_process = own_process
        self._server = None  # a ThreadedMotoServer, or the child process

    @property
    def endpoint(self) -> str:
        if not self.port:
            raise RuntimeError("LoopbackS3 has no port before start()")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def store(self) -> Store:
        """A `Store` for this server (for code that talks to it on purpose, e.g. a log store)."""
        return Store(self.endpoint)

    def client(self):
        return self.store.client()

    def start(self, timeout: float = 30.0) -> LoopbackS3:
        if self._server is not None:
            return self
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        if self.own_process:
            self._start_process(timeout)
        else:
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            server.start()
            self.port = int(server.get_host_and_port()[1])
            self._server = server
        try:
            for b in self.buckets:
                self.store.ensure_bucket(b)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_process(self, timeout: float) -> None:
        if not self.port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    self._server = proc
                    return
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
        raise RuntimeError(f"moto server did not start on port {self.port} within {timeout:g} s")

    def stop(self) -> None:
        server, self._server = self._server, None
        if isinstance(server, subprocess.Popen):
            server.terminate()
            server.wait(10)
        elif server is not None:
            server.stop()


@contextlib.contextmanager
def dummy_credentials(endpoint: str | None = None) -> Iterator[None]:
    """Export dummy AWS credentials (and `AWS_ENDPOINT_URL` when given); restore on exit.

    `AWS_ENDPOINT_URL` reaches subprocesses (kfp.local tasks) that never see our Store.
    """
    keys = (*DUMMY_AWS_ENV, "AWS_ENDPOINT_URL")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        os.environ.update(DUMMY_AWS_ENV)
        if endpoint:
            os.environ["AWS_ENDPOINT_URL"] = endpoint
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def local_s3(
    buckets: Iterable[str] = (),
    *,
    port: int = 0,
    own_process: bool = False,
    export_endpoint: bool = False,
) -> Iterator[LoopbackS3]:
    """A running `LoopbackS3` with dummy credentials exported; stopped and restored on exit.

    `export_endpoint` also sets `AWS_ENDPOINT_URL` (for subprocesses).
    """
    s3 = LoopbackS3(port, buckets, own_process=own_process)
    with dummy_credentials():
        s3.start()
        try:
            with dummy_credentials(s3.endpoint if export_endpoint else None):
                yield s3
        finally:
            s3.stop()
