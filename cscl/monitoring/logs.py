"""Read the inference logs of one model version over a date window, at scale.

Layout (docs/CONTRACTS.md): `<prefix>/inference-logs/date=YYYY-MM-DD/<request-id>.json`, local or
s3://. A day can hold tens of thousands of small records, so reading is streamed: objects are
fetched by a small thread pool with bounded look-ahead, parsed one at a time, and only the numbers
drift needs are kept, as float32 rows in growable arrays (never the raw JSON, never a slide). A
record that is corrupt, partial, for another model version or a duplicate request is skipped and
counted by reason — one bad record never stops a monitoring run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from cscl.errors import InputError
from cscl.io import storage
from cscl.monitoring.schema import QC_NUMERIC, RecordError, flatten_predictions, flatten_qc
from cscl.progress import track

LOGS_DIR = "inference-logs"


class _Rows:
    """A float32 (n, width) array filled row by row: no per-row Python objects.

    Sized once for the number of listed records (an upper bound of what is kept), so memory is
    n × width × 4 bytes plus the records in flight — no doubling, no copy when nothing was skipped.
    """

    def __init__(self, width: int, capacity: int):
        self.a = np.empty((max(1, capacity), width), dtype=np.float32)
        self.n = 0

    def append(self, row: Iterable[float]) -> None:
        self.a[self.n] = row
        self.n += 1

    def array(self) -> np.ndarray:
        if self.n == len(self.a):
            return self.a
        out = self.a[: self.n].copy()
        self.a = out  # free the unused tail now
        return out


@dataclass
class LogWindow:
    """The usable records of a window, as arrays, plus what was skipped and why."""

    model_version: str
    since: str
    until: str
    request_ids: list[str]
    slide_ids: list[str]
    embeddings: np.ndarray  # (n, D) float32
    qc_numeric: np.ndarray  # (n, len(QC_NUMERIC)) float32
    vendors: list[str]
    predictions: np.ndarray  # (n, len(pred_columns)) float32
    pred_columns: list[str]
    files: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.request_ids)

    def counts(self) -> dict:
        return {
            "files": self.files,
            "used": len(self),
            "skipped": dict(sorted(self.skipped.items())),
        }


def logs_root(prefix: str) -> str:
    """`<prefix>/inference-logs` (accepts the prefix or the inference-logs folder itself)."""
    p = str(prefix).rstrip("/")
    return p if p.endswith(LOGS_DIR) else f"{p}/{LOGS_DIR}"


def prefix_of(logs: str) -> str:
    """The project prefix from a logs location (which may name `<prefix>/inference-logs`)."""
    p = str(logs).rstrip("/")
    return p[: -len(LOGS_DIR) - 1] if p.endswith("/" + LOGS_DIR) else p


def parse_date(s: str | dt.date, what: str) -> dt.date:
    if isinstance(s, dt.date):
        return s
    try:
        return dt.date.fromisoformat(str(s))
    except ValueError:
        raise InputError(f"{what} {s!r} is not a date", hint="write it as YYYY-MM-DD") from None


def window_dates(since: str | dt.date, until: str | dt.date) -> list[dt.date]:
    a, b = parse_date(since, "--since"), parse_date(until, "--until")
    if b < a:
        raise InputError(f"window ends ({b}) before it starts ({a})", hint="check --since/--until")
    if (b - a).days > 366:
        raise InputError(f"window {a}..{b} is longer than a year", hint="monitor shorter windows")
    return [a + dt.timedelta(days=i) for i in range((b - a).days + 1)]


def resolve_window(
    since: str | dt.date | None,
    until: str | dt.date | None,
    window_days: int | None,
    today: dt.date,
) -> tuple[str, str]:
    """(since, until) as ISO dates.

    With `since`: until defaults to today. Without (scheduled runs): the last `window_days`
    complete days, i.e. until = yesterday, since = until - window_days + 1.
    """
    if since:
        u = parse_date(until or today, "--until")
        return str(parse_date(since, "--since")), str(u)
    if not window_days or int(window_days) < 1:
        raise InputError("give --since, or --window-days N (>= 1)")
    u = parse_date(until, "--until") if until else today - dt.timedelta(days=1)
    return str(u - dt.timedelta(days=int(window_days) - 1)), str(u)


def list_window(prefix: str, since: str | dt.date, until: str | dt.date) -> list[str]:
    """URIs of the `.json` records in the date partitions of [since, until] (inclusive)."""
    root = logs_root(prefix)
    out: list[str] = []
    for day in window_dates(since, until):
        part = f"{root}/date={day.isoformat()}/"
        if storage.is_s3(part):
            out.extend(u for u in storage.list_uris(part) if u.endswith(".json"))
        else:
            d = storage.local_path(part)
            if d.is_dir():
                with os.scandir(d) as it:
                    out.extend(sorted(e.path for e in it if e.name.endswith(".json")))
    return out


def _fetcher() -> Callable[[str], bytes | None]:
    """One shared client for all threads (boto3 clients are thread-safe); None = unreadable."""
    client = None

    def fetch(uri: str) -> bytes | None:
        nonlocal client
        try:
            if storage.is_s3(uri):
                if client is None:
                    client = storage.s3_client()
                bucket, key = storage.parse_s3_uri(uri)
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
            with open(uri, "rb") as f:
                return f.read()
        except Exception:  # vanished or unreadable object: counted by the caller
            return None

    return fetch


def _fetch_all(uris: list[str], workers: int) -> Iterator[bytes | None]:
    """Contents in order, with at most `4 * workers` objects in flight (bounded memory)."""
    fetch = _fetcher()
    if workers <= 1 or len(uris) < 2:
        yield from map(fetch, uris)
        return
    ahead = 4 * workers
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fetch, u) for u in uris[:ahead]]
        for i in range(len(uris)):
            data = futures[i].result()
            futures[i] = None  # type: ignore[call-overload]
            if i + ahead < len(uris):
                futures.append(pool.submit(fetch, uris[i + ahead]))
            yield data


def read_window(
    prefix: str,
    model_version: str,
    since: str | dt.date,
    until: str | dt.date,
    *,
    pred_columns: list[str],
    embedding_dim: int,
    workers: int = 16,
    progress: bool = False,
) -> LogWindow:
    """Stream the window's records into arrays (see module docstring).

    `pred_columns` and `embedding_dim` come from the reference set: a record that does not match
    them cannot be compared, and is skipped as `missing_predictions` / `embedding_dim`.
    """
    uris = list_window(prefix, since, until)
    emb = _Rows(embedding_dim, len(uris))
    qcn = _Rows(len(QC_NUMERIC), len(uris))
    prd = _Rows(len(pred_columns), len(uris))
    rids: list[str] = []
    sids: list[str] = []
    vendors: list[str] = []
    seen: set[str] = set()
    skipped: Counter[str] = Counter()
    stream = _fetch_all(uris, workers)
    if uris:
        stream = track(stream, "inference logs", total=len(uris), quiet=not progress)
    for data in stream:
        if data is None:
            skipped["unreadable"] += 1
            continue
        try:
            rec = json.loads(data)
            if not isinstance(rec, dict):
                raise RecordError("corrupt_json", "not an object")
            if str(rec.get("model_version")) != model_version:
                raise RecordError("other_model_version")
            rid = rec.get("request_id")
            if not isinstance(rid, str) or not rid:
                raise RecordError("missing_request_id")
            if rid in seen:
                raise RecordError("duplicate_request")
            e = rec.get("embedding")
            if not isinstance(e, list) or len(e) != embedding_dim:
                raise RecordError("embedding_dim" if isinstance(e, list) else "missing_embedding")
            e_arr = np.asarray(e, dtype=np.float32)
            if not np.isfinite(e_arr).all():
                raise RecordError("bad_embedding")
            q_values, vendor = flatten_qc(rec.get("qc"))
            p_values = flatten_predictions(rec.get("predictions"), pred_columns)
        except (json.JSONDecodeError, UnicodeDecodeError):
            skipped["corrupt_json"] += 1
            continue
        except (RecordError, TypeError, ValueError) as exc:
            skipped[getattr(exc, "reason", "malformed")] += 1
            continue
        seen.add(rid)
        rids.append(rid)
        sids.append(str(rec.get("slide_id") or rec.get("uri_hash") or ""))
        vendors.append(vendor)
        emb.append(e_arr)
        qcn.append(q_values)
        prd.append(p_values)
    return LogWindow(
        model_version=model_version,
        since=str(parse_date(since, "--since")),
        until=str(parse_date(until, "--until")),
        request_ids=rids,
        slide_ids=sids,
        embeddings=emb.array(),
        qc_numeric=qcn.array(),
        vendors=vendors,
        predictions=prd.array(),
        pred_columns=list(pred_columns),
        files=len(uris),
        skipped=dict(skipped),
    )
