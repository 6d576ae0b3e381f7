"""Fixtures for monitoring tests: a reference bundle from the record model, log writers, a
loopback S3 (moto) and loopback stand-ins for the Kubeflow Pipelines and GitHub APIs."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

# `pipelines` must be the repository package, not the tests/pipelines folder (which a bare
# `pytest` puts on sys.path as a namespace package).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cscl.io import storage  # noqa: E402
from cscl.monitoring.reference import write_reference  # noqa: E402
from cscl.monitoring.simulate import RecordModel, make_records, write_records  # noqa: E402

VERSION = "v1"
DAY = "2026-11-02"
# Only the embedding signal: the Evidently report of one signal renders fast, so the plumbing
# tests (idempotency, trigger, CLI) stay quick; behaviour tests use the full default policy.
FAST_POLICY = {
    "min_samples": 20,
    "signals": {
        "qc": {"enabled": False},
        "predictions": {"enabled": False},
        "target": {"enabled": False},
    },
}


@pytest.fixture(scope="session")
def record_model() -> RecordModel:
    return RecordModel(dim=16, seed=0)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, record_model) -> Path:
    """A bundle dir holding reference.parquet of model VERSION (150 training slides)."""
    d = tmp_path_factory.mktemp("bundle")
    ref = record_model.sample(150, seed=1)
    write_reference(
        d, ref["embeddings"], ref["predictions"], ref["qc"], VERSION, labels=ref["labels"]
    )
    return d


def write_cohort(prefix, model, n, seed, shift=None, day=DAY, version=VERSION):
    recs = make_records(model.sample(n, seed=seed, shift=shift), version, day, seed=seed)
    write_records(str(prefix), recs)
    return recs


@pytest.fixture
def s3_store(s3_endpoint):
    """The process store pointed at the loopback S3 (as `--s3-endpoint` does), then restored."""
    before = storage.current_store()
    storage.configure_store(s3_endpoint)
    yield s3_endpoint
    storage.configure_store(before.endpoint_url)


class StandIn:
    """A loopback HTTP server answering from `routes`; records every request."""

    def __init__(self, routes):
        self.routes = routes  # (method, path) -> callable(query, body) -> (status, json|None)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _do(self):
                u = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:  # multipart upload of a pipeline package
                    body = raw
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": u.path,
                        "query": parse_qs(u.query),
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                fn = outer.routes.get((self.command, u.path))
                status, payload = fn(parse_qs(u.query), body) if fn else (404, {"error": "nope"})
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _do

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def calls(self, method, path):
        return [r for r in self.requests if r["method"] == method and r["path"] == path]


KFP = "/apis/v2beta1"


@pytest.fixture
def kfp_standin():
    """The Kubeflow Pipelines v2beta1 REST calls kfp.Client makes to start a run."""
    routes = {
        ("GET", f"{KFP}/healthz"): lambda q, b: (200, {"multi_user": False}),
        ("GET", f"{KFP}/pipelines"): lambda q, b: (
            200,
            {"pipelines": [{"pipeline_id": "pipe-1", "display_name": "cscl-retraining"}]}
            if "cscl-retraining" in q.get("filter", [""])[0]
            else {},
        ),
        ("GET", f"{KFP}/pipelines/pipe-1/versions"): lambda q, b: (
            200,
            {
                "pipeline_versions": [
                    {
                        "pipeline_id": "pipe-1",
                        "pipeline_version_id": "ver-9",
                        "display_name": "0.1.0-abc1234",
                    }
                ]
            },
        ),
        ("GET", f"{KFP}/experiments"): lambda q, b: (200, {}),
        ("POST", f"{KFP}/experiments"): lambda q, b: (
            200,
            {"experiment_id": "exp-1", "display_name": b["display_name"]},
        ),
        ("POST", f"{KFP}/runs"): lambda q, b: (
            200,
            {"run_id": "run-42", "display_name": b["display_name"], "state": "PENDING"},
        ),
    }
    s = StandIn(routes)
    yield s
    s.close()


@pytest.fixture
def github_standin(monkeypatch):
    """GitHub's workflow-dispatch endpoint (204 No Content) for repo acme/cscl."""
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test_token")
    path = "/repos/acme/cscl/actions/workflows/retrain.yml/dispatches"
    s = StandIn({("POST", path): lambda q, b: (204, None)})
    s.dispatch_path = path
    yield s
    s.close()


@pytest.fixture(scope="session")
def mon():
    """Constants and helpers for the tests (test modules cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        VERSION=VERSION, DAY=DAY, FAST_POLICY=FAST_POLICY, KFP=KFP, write_cohort=write_cohort
    )
