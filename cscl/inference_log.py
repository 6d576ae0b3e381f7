"""Inference log records, written to the object store in the background.

Every prediction leaves one JSON record at
`<prefix>/inference-logs/date=YYYY-MM-DD/<request-id>.json` (docs/CONTRACTS.md "Inference log
record"); drift monitoring (cscl.monitoring.logs) reads them. Writing must never slow down or
fail a request: `log()` only puts the record on a bounded queue; one background thread writes it.
When the store is down the record is kept in a bounded retry buffer and written later (with
backoff); what cannot be kept is counted as dropped. Records hold no patient data: the slide id
of a feature file, or a hash of the request URI.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import logging
import threading
import time
import uuid
from typing import Any

from cscl.io import storage

log = logging.getLogger(__name__)
LOGS_DIR = "inference-logs"


def uri_hash(uri: str) -> str:
    """A stable pseudonym for a request URI (bucket/key names may contain patient identifiers)."""
    return hashlib.sha256(str(uri).encode()).hexdigest()[:24]


def make_record(
    result: dict,
    request_id: str | None = None,
    *,
    uri: str | None = None,
    source: str | None = None,
    when: dt.datetime | None = None,
) -> dict:
    """A log record from a Predictor answer (embedding, predictions, qc, model_version)."""
    when = when or dt.datetime.now(dt.UTC)
    rec: dict[str, Any] = {
        "request_id": request_id or uuid.uuid4().hex,
        "time": when.isoformat(timespec="milliseconds"),
        "model_version": result.get("model_version"),
        "model_name": result.get("model_name"),
        "source": source,
        "n_patches": result.get("n_patches"),
        "embedding": result.get("embedding"),
        "predictions": result.get("predictions"),
        "qc": result.get("qc"),
    }
    if uri is not None:
        rec["uri_hash"] = uri_hash(uri)
    else:
        rec["slide_id"] = result.get("slide_id")
    return rec


def record_uri(prefix: str, record: dict) -> str:
    """`<prefix>/inference-logs/date=YYYY-MM-DD/<request_id>.json` (date of the record's time)."""
    day = str(record["time"])[:10]
    rid = "".join(c for c in str(record["request_id"]) if c.isalnum() or c in "-_")
    return f"{prefix.rstrip('/')}/{LOGS_DIR}/date={day}/{rid}.json"


class InferenceLogger:
    """Asynchronous, never-failing writer of inference log records.

    `log(record)` returns at once; `flush(timeout)` waits for everything queued to be written (or
    the timeout); `stats()` counts written, failed attempts, pending and dropped records.
    `store`: where S3 records go when that is not the process store (`storage.current_store()`),
    e.g. a log bucket on another endpoint than the data.
    """

    def __init__(
        self,
        prefix_uri: str,
        *,
        store: storage.Store | None = None,
        max_queue: int = 1000,
        max_pending: int = 10000,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        timeout: float = 5.0,
    ):
        self.prefix = str(prefix_uri).rstrip("/")
        self.store = store
        self.max_queue = max_queue
        self.timeout = timeout
        self._queue: collections.deque = collections.deque()
        self._retry: collections.deque = collections.deque(maxlen=max_pending)
        self._cond = threading.Condition()
        self._counts = collections.Counter()
        self._retry_initial, self._retry_max = retry_initial, retry_max
        self._next_retry = 0.0
        self._delay = retry_initial
        self._busy = False
        self._closed = False
        self._client = None
        self._thread = threading.Thread(target=self._run, name="cscl-inference-log", daemon=True)
        self._thread.start()

    # ---- producer side ------------------------------------------------------------------------
    def log(self, record: dict) -> str | None:
        """Queue one record; returns its target URI, or None when the queue is full (dropped)."""
        try:
            uri = record_uri(self.prefix, record)
            data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
        except (KeyError, TypeError, ValueError) as exc:  # never fail the request over a log
            log.warning("inference log record not serialisable, dropped: %s", exc)
            with self._cond:
                self._counts["unserialisable"] += 1
            return None
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self._counts["dropped"] += 1
                return None
            self._queue.append((uri, data))
            self._counts["queued"] += 1
            self._cond.notify_all()
        return uri

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued and pending record is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._next_retry = 0.0  # retry now rather than after the backoff
            self._cond.notify_all()
            while self._queue or self._retry or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
                self._next_retry = min(self._next_retry, time.monotonic())
        return True

    def stats(self) -> dict:
        with self._cond:
            return {
                "queued": self._counts["queued"],
                "written": self._counts["written"],
                "failed_attempts": self._counts["failed"],
                # in flight counts as pending: a queued record is written, pending or evicted
                "pending": len(self._queue) + len(self._retry) + int(self._busy),
                "dropped": self._counts["dropped"] + self._counts["evicted"],
                "unserialisable": self._counts["unserialisable"],
            }

    def close(self, timeout: float = 5.0) -> bool:
        """Flush what can be flushed, then stop the thread."""
        ok = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        return ok

    # ---- writer thread ------------------------------------------------------------------------
    def _write(self, uri: str, data: bytes) -> None:
        if storage.is_s3(uri):
            if self._client is None:  # one attempt per call: this loop does the retrying
                store = self.store or storage.current_store()
                self._client = storage.s3_client(store.endpoint, max_attempts=1)
            bucket, key = storage.parse_s3_uri(uri)
            self._client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType="application/json"
            )
        else:
            storage.write_bytes(uri, data)

    def _take(self) -> tuple[str, bytes, bool] | None:
        """Next (uri, data, is_retry) to write, waiting if there is nothing; None to stop."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                if self._retry and now >= self._next_retry:
                    uri, data = self._retry.popleft()
                    self._busy = True
                    return uri, data, True
                if self._queue:
                    uri, data = self._queue.popleft()
                    self._busy = True
                    return uri, data, False
                wait = max(0.01, self._next_retry - now) if self._retry else None
                self._cond.wait(wait)

    def _run(self) -> None:
        while (item := self._take()) is not None:
            uri, data, _ = item
            try:
                self._write(uri, data)
            except Exception as exc:  # the store is down or refuses: keep the record, back off
                with self._cond:
                    self._counts["failed"] += 1
                    if len(self._retry) == self._retry.maxlen:
                        self._counts["evicted"] += 1  # deque drops the oldest
                    self._retry.append((uri, data))
                    self._next_retry = time.monotonic() + self._delay
                    self._delay = min(self._delay * 2, self._retry_max)
                    self._busy = False
                    self._cond.notify_all()
                if self._counts["failed"] in (1, 10, 100) or self._counts["failed"] % 1000 == 0:
                    log.warning("inference log write to %s failed: %s (will retry)", uri, exc)
                continue
            with self._cond:
                self._counts["written"] += 1
                self._delay = self._retry_initial
                self._next_retry = 0.0  # the store is back: drain pending records now
                self._busy = False
                self._cond.notify_all()
