"""One monitoring run: logs of a model version over a window vs its reference set → verdict
(`cscl.monitoring.verdict`) → Evidently report (drift.html) + machine-readable drift.json → maybe
one retraining (`cscl_platform.monitoring.retraining`).

`run_monitoring` is what `cscl monitor` and the `monitor_drift` KFP component call. A rerun of the
same window rewrites the same report (the computation is deterministic) and never triggers twice.
Both entry points set the object store (`cscl.io.storage.configure_store`) before calling it.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cscl import __version__
from cscl.io import storage
from cscl.monitoring import state as st
from cscl.monitoring.labels import load_window_labels
from cscl.monitoring.logs import prefix_of, read_window, resolve_window
from cscl.monitoring.policy import Policy, load_policy
from cscl.monitoring.reference import load_reference
from cscl.monitoring.verdict import DRIFT, INSUFFICIENT, judge
from cscl.runtime import jsonable
from cscl_platform.monitoring.report import add_headline, write_report_html
from cscl_platform.monitoring.retraining import TriggerConfig, retrain

DRIFT_SCHEMA = "cscl.drift/v1"


@dataclass
class MonitoringResult:
    verdict: str
    reason: str
    report_uri: str  # folder holding drift.html and drift.json
    drift: dict[str, Any]  # the content of drift.json
    action: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"verdict: {self.verdict} — {self.reason}",
            f"retraining: {self.action.get('action')} — {self.action.get('reason')}",
            f"report: {self.report_uri}/drift.html (+ drift.json)",
        ]
        return "\n".join(lines)


def drift_metrics(drift: dict[str, Any]) -> dict[str, float]:
    """The numbers a dashboard/KFP `Metrics` shows for a drift.json."""
    out: dict[str, float] = {
        "drift": float(drift["verdict"] == DRIFT),
        "insufficient_data": float(drift["verdict"] == INSUFFICIENT),
        "n_current": float(drift["sample_sizes"]["current"]),
        "n_reference": float(drift["sample_sizes"]["reference"]),
        "n_skipped_records": float(sum(drift["records"]["skipped"].values())),
        "retraining_triggered": float(drift["retraining"].get("action") == "triggered"),
    }
    for name, sig in drift["signals"].items():
        if sig.get("value") is not None:
            key = "embedding_auc" if name == "embedding" else f"{name}_drifted_columns"
            out[key] = float(sig["value"])
            out[f"{name}_threshold"] = float(sig["threshold"])
    return out


def _plain_html(title: str, text: str) -> Callable[[Path], None]:
    """The report of a window without a verdict: a page saying why."""

    def write(path: Path) -> None:
        path.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1><pre>{html.escape(text)}</pre>"
            "</body></html>"
        )

    return write


def _write_report(out: str, html_writer: Callable[[Path], None], drift: dict) -> None:
    """drift.html (opening with our verdict) then drift.json (the json last: its presence marks a complete report)."""
    with tempfile.TemporaryDirectory() as d:
        page = Path(d) / "drift.html"
        html_writer(page)
        add_headline(page, drift)  # our verdict first, whatever the page below says
        body = json.dumps(drift, indent=2, allow_nan=False).encode()
        if storage.is_s3(out):
            storage.upload(page, f"{out}/drift.html")
            storage.write_bytes(f"{out}/drift.json", body)
        else:
            storage.upload(page, str(Path(storage.local_path(out)) / "drift.html"))
            storage.write_bytes(str(Path(storage.local_path(out)) / "drift.json"), body)


def run_monitoring(
    *,
    model_version: str,
    logs: str,
    reference: str,
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    window_days: int | None = None,
    policy: str | Path | dict | Policy | None = None,
    out: str | None = None,
    labels: str | None = None,
    trigger: TriggerConfig | None = None,
    state_root: str | None = None,
    workers: int = 16,
    progress: bool = True,
    now: dt.datetime | None = None,
) -> MonitoringResult:
    """Monitor `model_version` over the inclusive date window [since, until] (UTC dates).

    Window: `since` (+ `until`, default today), or `window_days` complete days ending yesterday
    (`cscl.monitoring.logs.resolve_window`).
    logs: the project prefix (`<prefix>/inference-logs/date=…/` below it) or that folder.
    reference: reference.parquet, a bundle dir or `models/<name>/<V>/` (local or s3://).
    out: report folder (default `<prefix>/monitoring/<model_version>_<since>_<until>`).
    state_root: idempotency state (default `<prefix>/monitoring/state`).
    """
    now = now or st.utcnow()
    since_s, until_s = resolve_window(since, until, window_days, now.date())
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    trigger = trigger or TriggerConfig()
    prefix = prefix_of(logs)
    out = (out or f"{prefix}/monitoring/{model_version}_{since_s}_{until_s}").rstrip("/")
    state_root = state_root or f"{prefix}/monitoring/state"

    ref = load_reference(reference, model_version=model_version)
    window = read_window(
        logs,
        model_version,
        since_s,
        until_s,
        pred_columns=ref.pred_columns,
        embedding_dim=ref.embeddings.shape[1],
        workers=workers,
        progress=progress,
    )
    label_df = load_window_labels(labels, window) if labels else None
    v = judge(ref, window, pol, label_df)
    if v.plan is None:
        html_writer = _plain_html(f"cscl drift: {model_version} {since_s}..{until_s}", v.reason)
    else:
        plan = v.plan

        def html_writer(path: Path) -> None:
            write_report_html(plan, path)

    action = retrain(
        trigger,
        pol,
        v.verdict,
        v.drifted,
        model_version=model_version,
        since=since_s,
        until=until_s,
        state_root=state_root,
        report_uri=out,
        reference_uri=ref.uri,
        now=now,
    )
    drift = jsonable(
        {
            "schema": DRIFT_SCHEMA,
            "cscl_version": __version__,
            "model_version": model_version,
            "window": {"since": since_s, "until": until_s},
            "verdict": v.verdict,
            "reason": v.reason,
            "sample_sizes": {
                "reference": len(ref),
                "current": len(window),
                "labelled": int(label_df.notna().any(axis=1).sum()) if label_df is not None else 0,
            },
            "records": window.counts(),
            "signals": {n: s.to_dict() for n, s in v.signals.items()},
            "retraining": action,
            "reference": ref.uri,
            "logs": str(logs),
            "policy": pol.raw,
            "report_html": f"{out}/drift.html",
            "created": now.isoformat(),
        }
    )
    _write_report(out, html_writer, drift)
    return MonitoringResult(v.verdict, v.reason, out, drift, action)
