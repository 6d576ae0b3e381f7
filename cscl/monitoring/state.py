"""Idempotency state of monitoring runs: at most one retraining trigger per (model version, window).

`<state_root>/<model-version>/<since>_<until>.json` is created *before* a retraining is started,
with a create-only write: S3 `PutObject` with `If-None-Match: *` (S3 and moto honour it; a store
that ignores the header degrades to last-writer-wins — documented in docs/MONITORING.md), or a
local hard link of a complete temp file (`os.link` fails when the name exists). The run that
creates it is the only one allowed to trigger; a retried run finds it and reports the earlier
trigger instead. A crash between the claim and the trigger call leaves a `claimed` state: no
retraining is started twice, at the cost of possibly none (`--force-trigger` re-arms it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cscl.io import storage


def window_key(since: str, until: str) -> str:
    return f"{since}_{until}"


def state_uri(state_root: str, model_version: str, since: str, until: str) -> str:
    return f"{str(state_root).rstrip('/')}/{model_version}/{window_key(since, until)}.json"


def read_state(uri: str) -> dict[str, Any] | None:
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError:
        return {"status": "corrupt", "uri": uri}


def create_state(uri: str, state: dict[str, Any]) -> bool:
    """Write `state` only if nothing is at `uri`; True when this call created it."""
    data = json.dumps(state, indent=2, sort_keys=True).encode()
    if storage.is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = storage.parse_s3_uri(uri)
        client = storage.s3_client()
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
                return False
            raise storage._explain_s3(exc, uri, None) from exc
    dest = storage.local_path(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, dest)
            return True
        except FileExistsError:
            return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def update_state(uri: str, state: dict[str, Any]) -> None:
    """Overwrite (atomically) a state this run created."""
    storage.write_bytes(uri, json.dumps(state, indent=2, sort_keys=True).encode())


def last_trigger(state_root: str, model_version: str) -> dict[str, Any] | None:
    """The most recent claimed/triggered state of a model version (for the cool-down)."""
    prefix = f"{str(state_root).rstrip('/')}/{model_version}/"
    best: dict[str, Any] | None = None
    for uri in storage.list_uris(prefix):
        if not uri.endswith(".json"):
            continue
        st = read_state(uri)
        if not st or st.get("status") not in {"claimed", "triggered"}:
            continue
        if best is None or str(st.get("claimed_at", "")) > str(best.get("claimed_at", "")):
            best = st
    return best


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
