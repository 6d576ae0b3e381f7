"""A loopback HTTP server answering the Kubeflow Pipelines REST API v2beta1 calls kfp.Client
makes when cscl submits a pipeline. The one allowed mock boundary (no KFP server runs here):
it keeps pipelines/versions/experiments/runs in memory and records every request so tests can
assert the request bodies."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    json: dict | None = None
    files: dict = field(default_factory=dict)  # form field name → bytes


class FakeKfpApi:
    def __init__(self):
        self.requests: list[Recorded] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == API + path]

    # -- request handling -----------------------------------------------------------------
    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> Recorded:
                u = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                rec = Recorded(
                    self.command,
                    u.path,
                    parse_qs(u.query),
                    {k.lower(): v for k, v in self.headers.items()},
                )
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("application/json") and raw:
                    rec.json = json.loads(raw)
                elif ctype.startswith("multipart/form-data"):
                    msg = BytesParser().parsebytes(
                        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
                    )
                    for part in msg.get_payload():
                        name = part.get_param("name", header="content-disposition")
                        rec.files[name] = part.get_payload(decode=True)
                api.requests.append(rec)
                return rec

            def do_GET(self):
                r = self._record()
                q = {k: v[0] for k, v in r.query.items()}
                if r.path == f"{API}/healthz":
                    return self._send(200, {"multi_user": False})
                if r.path == f"{API}/pipelines":
                    name = _filter_name(q.get("filter"))
                    found = [p for p in api.pipelines.values() if p["display_name"] == name]
                    return self._send(
                        200, {"pipelines": found, "total_size": len(found)} if found else {}
                    )
                if r.path == f"{API}/experiments":
                    name = _filter_name(q.get("filter"))
                    found = [e for e in api.experiments.values() if e["display_name"] == name]
                    return self._send(
                        200, {"experiments": found, "total_size": len(found)} if found else {}
                    )
                return self._send(404, {"error": f"not served: GET {r.path}"})

            def do_POST(self):
                r = self._record()
                q = {k: v[0] for k, v in r.query.items()}
                if r.path == f"{API}/pipelines/upload":
                    pid = str(uuid.uuid4())
                    p = {"pipeline_id": pid, "display_name": q["name"], "created_at": _now()}
                    api.pipelines[pid] = p
                    api.versions[pid] = [{"pipeline_version_id": str(uuid.uuid4()),
                                          "display_name": q["name"], "pipeline_id": pid}]  # fmt: skip
                    return self._send(200, p)
                if r.path == f"{API}/pipelines/upload_version":
                    pid = q["pipelineid"]
                    if pid not in api.pipelines:
                        return self._send(404, {"error": f"no pipeline {pid}"})
                    v = {"pipeline_version_id": str(uuid.uuid4()), "display_name": q["name"],
                         "pipeline_id": pid, "created_at": _now()}  # fmt: skip
                    api.versions[pid].append(v)
                    return self._send(200, v)
                if r.path == f"{API}/experiments":
                    eid = str(uuid.uuid4())
                    e = {**(r.json or {}), "experiment_id": eid, "created_at": _now()}
                    api.experiments[eid] = e
                    return self._send(200, e)
                if r.path == f"{API}/runs":
                    rid = str(uuid.uuid4())
                    run = {**(r.json or {}), "run_id": rid, "state": "PENDING"}
                    api.runs[rid] = run
                    return self._send(200, run)
                return self._send(404, {"error": f"not served: POST {r.path}"})

        return Handler


def _filter_name(filt: str | None) -> str | None:
    if not filt:
        return None
    preds = json.loads(filt).get("predicates", [])
    for p in preds:
        if p.get("key") in ("display_name", "name"):
            return p.get("string_value") or p.get("stringValue")
    return None


def _now() -> str:
    return "2026-01-01T00:00:00Z"
