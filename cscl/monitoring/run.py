"""One monitoring run: logs of a model version over a window vs its reference set → Evidently
report (drift.html) + machine-readable drift.json → verdict → maybe one retraining.

Verdicts: "insufficient data" (too few usable records or reference rows: no verdict is given),
"no drift", "drift" (a signal named in the policy's `retrain_on` drifted). A rerun of the same
window rewrites the same report (computation is deterministic) and never triggers twice
(`cscl.monitoring.state`).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cscl import __version__
from cscl.errors import InputError
from cscl.io import storage
from cscl.monitoring import state as st
from cscl.monitoring.drift import SignalResult, compute_drift
from cscl.monitoring.logs import LOGS_DIR, LogWindow, parse_date, read_window
from cscl.monitoring.policy import Policy, load_policy
from cscl.monitoring.reference import ReferenceSet, load_reference
from cscl.monitoring.schema import LABEL_PREFIX
from cscl.monitoring.trigger import (
    GithubTarget,
    KfpTarget,
    TriggerError,
    trigger_github,
    trigger_kfp,
)

NO_DRIFT, DRIFT, INSUFFICIENT = "no drift", "drift", "insufficient data"


@dataclass
class TriggerConfig:
    """What to do on drift: mode "none" (report only), "kfp" or "github"."""

    mode: str = "none"
    kfp: KfpTarget | None = None
    github: GithubTarget | None = None
    force: bool = False  # re-arm a window whose trigger was claimed before


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


def prefix_of(logs: str) -> str:
    """The project prefix from `--logs` (which may name `<prefix>/inference-logs` itself)."""
    p = str(logs).rstrip("/")
    return p[: -len(LOGS_DIR) - 1] if p.endswith("/" + LOGS_DIR) else p


def load_window_labels(
    labels_uri: str, window: LogWindow, endpoint_url: str | None = None
) -> pd.DataFrame:
    """Labels that arrived later, joined to the window's rows by `request_id` or `slide_id`.

    The file (CSV/Parquet) has one of those id columns and one column per task; the result has a
    `label__<task>` column per task aligned with the window (missing = not labelled yet).
    """
    from cscl.io.manifest import read_table

    df = read_table(labels_uri, endpoint_url)
    key = next((k for k in ("request_id", "slide_id") if k in df.columns), None)
    if key is None:
        raise InputError(
            f"labels {labels_uri} have neither a request_id nor a slide_id column",
            hint="add the id of the logged request (request_id) or slide (slide_id)",
        )
    tasks = [c for c in df.columns if c not in {"request_id", "slide_id", "case_id", "split"}]
    df = df.drop_duplicates(key, keep="last").set_index(df[key].astype(str).rename(None))
    ids = window.request_ids if key == "request_id" else window.slide_ids
    out = pd.DataFrame(index=range(len(ids)))
    for t in tasks:
        col = df[t].reindex(ids)
        out[f"{LABEL_PREFIX}{t}"] = [None if pd.isna(v) else str(v) for v in col]
    return out


def _insufficient(ref: ReferenceSet, window: LogWindow, policy: Policy) -> str | None:
    if len(window) < policy.min_samples:
        return (
            f"{len(window)} usable log records in the window, the policy needs "
            f"{policy.min_samples} (files {window.files}, skipped {sum(window.skipped.values())})"
        )
    if len(ref) < policy.min_reference:
        return f"reference set has {len(ref)} rows, the policy needs {policy.min_reference}"
    return None


def _write_report(out: str, html_writer, drift: dict, endpoint_url: str | None) -> None:
    """drift.html then drift.json (the json last: its presence marks a complete report)."""
    with tempfile.TemporaryDirectory() as d:
        html = Path(d) / "drift.html"
        html_writer(html)
        body = json.dumps(drift, indent=2, default=str).encode()
        if storage.is_s3(out):
            storage.upload(html, f"{out}/drift.html", endpoint_url)
            storage.write_bytes(f"{out}/drift.json", body, endpoint_url)
        else:
            storage.upload(html, str(Path(storage.local_path(out)) / "drift.html"))
            storage.write_bytes(str(Path(storage.local_path(out)) / "drift.json"), body)


def _plain_html(title: str, text: str):
    import html as h

    def write(path: Path) -> None:
        path.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{h.escape(title)}</title>"
            f"</head><body><h1>{h.escape(title)}</h1><pre>{h.escape(text)}</pre></body></html>"
        )

    return write


def _retrain(
    trigger: TriggerConfig,
    policy: Policy,
    verdict: str,
    drifted: list[str],
    *,
    model_version: str,
    since: str,
    until: str,
    state_root: str,
    report_uri: str,
    reference_uri: str,
    endpoint_url: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """Decide and maybe start one retraining; always say what was done and why."""
    base = {"mode": trigger.mode, "state": None}
    if verdict != DRIFT:
        why = "no drift" if verdict == NO_DRIFT else "no verdict (insufficient data)"
        return {**base, "action": "none", "reason": f"{why}: nothing to retrain"}
    if trigger.mode == "none":
        return {
            **base,
            "action": "none",
            "reason": f"drift in {drifted}, but trigger mode is 'none' (report only)",
        }
    uri = st.state_uri(state_root, model_version, since, until)
    base["state"] = uri
    last = st.last_trigger(state_root, model_version, endpoint_url)
    if last and last.get("window") != st.window_key(since, until) and not trigger.force:
        at = dt.datetime.fromisoformat(last["claimed_at"])
        hours = (now - at).total_seconds() / 3600
        if hours < policy.cooldown_hours:
            return {
                **base,
                "action": "skipped_cooldown",
                "reason": f"a retraining was started {hours:.1f} h ago (window {last['window']}, "
                f"{last.get('result', {}).get('run_id', '')}); cool-down is "
                f"{policy.cooldown_hours:g} h",
            }
    claim = {
        "status": "claimed",
        "model_version": model_version,
        "window": st.window_key(since, until),
        "claimed_at": now.isoformat(),
        "mode": trigger.mode,
        "signals": drifted,
        "report": report_uri,
    }
    if trigger.force:
        st.update_state(uri, claim, endpoint_url)
    elif not st.create_state(uri, claim, endpoint_url):
        prev = st.read_state(uri, endpoint_url) or {}
        return {
            **base,
            "action": "already_triggered",
            "reason": f"this window already has a retraining ({prev.get('status')} at "
            f"{prev.get('claimed_at')}, {prev.get('mode')} {prev.get('result', {})}); "
            "not starting another",
            "previous": prev,
        }
    run_name = f"retrain-{model_version}-drift-{since}_{until}"
    model_dir = model_dir_of(reference_uri)
    why = f"drift in {drifted} for window {since}..{until}"
    try:
        if trigger.mode == "kfp":
            if trigger.kfp is None:
                raise InputError("trigger mode kfp needs --kfp-host")
            result = trigger_kfp(trigger.kfp, run_name, {"current_model_uri": model_dir})
            what = f"started Kubeflow run {result['run_id']} of {trigger.kfp.pipeline_name}"
        elif trigger.mode == "github":
            if trigger.github is None:
                raise InputError("trigger mode github needs --github-repo")
            inputs = {"model_version": model_version, "reason": why[:1000]}
            result = trigger_github(trigger.github, inputs)
            what = f"dispatched workflow {trigger.github.workflow} on {trigger.github.repo}"
        else:
            raise InputError(f"unknown trigger mode {trigger.mode!r}", hint="none, kfp or github")
    except (TriggerError, InputError) as exc:
        # Nothing was started: release the claim so a retry can trigger.
        storage.delete(uri)
        return {**base, "action": "failed", "reason": f"{why}; trigger failed: {exc}"}
    st.update_state(uri, {**claim, "status": "triggered", "result": result}, endpoint_url)
    return {**base, "action": "triggered", "reason": f"{why}: {what}", "result": result}


def model_dir_of(reference_uri: str) -> str:
    """`…/models/<name>/<version>/` from its `bundle/reference.parquet` (the retraining pipeline's
    `current_model_uri`: the model to beat)."""
    d = reference_uri.rsplit("/", 1)[0]
    return (d[: -len("/bundle")] if d.endswith("/bundle") else d) + "/"


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
    endpoint_url: str | None = None,
    workers: int = 16,
    progress: bool = True,
    now: dt.datetime | None = None,
) -> MonitoringResult:
    """Monitor `model_version` over the inclusive date window [since, until] (UTC dates).

    Window: `since` (+ `until`, default today), or `window_days` complete days ending yesterday
    (`resolve_window`).
    logs: the project prefix (`<prefix>/inference-logs/date=…/` below it) or that folder.
    reference: reference.parquet, a bundle dir or `models/<name>/<V>/` (local or s3://).
    out: report folder (default `<prefix>/monitoring/<model_version>_<since>_<until>`).
    state_root: idempotency state (default `<prefix>/monitoring/state`).
    """
    now = now or st.utcnow()
    since_s, until_s = resolve_window(since, until, window_days, now.date())
    pol = policy if isinstance(policy, Policy) else load_policy(policy, endpoint_url)
    trigger = trigger or TriggerConfig()
    prefix = prefix_of(logs)
    out = (out or f"{prefix}/monitoring/{model_version}_{since_s}_{until_s}").rstrip("/")
    state_root = state_root or f"{prefix}/monitoring/state"

    ref = load_reference(reference, model_version=model_version, endpoint_url=endpoint_url)
    window = read_window(
        logs,
        model_version,
        since_s,
        until_s,
        pred_columns=ref.pred_columns,
        embedding_dim=ref.embeddings.shape[1],
        endpoint_url=endpoint_url,
        workers=workers,
        progress=progress,
    )
    label_df = load_window_labels(labels, window, endpoint_url) if labels else None

    signals: dict[str, SignalResult] = {}
    short = _insufficient(ref, window, pol)
    if short:
        verdict, reason = INSUFFICIENT, short
        html_writer = _plain_html(f"cscl drift: {model_version} {since_s}..{until_s}", reason)
    else:
        comp = compute_drift(ref, window, pol, label_df)
        signals = comp.signals
        drifted = [n for n, s in signals.items() if s.status == "drift" and n in pol.retrain_on]
        if drifted:
            verdict = DRIFT
            reason = "; ".join(f"{n}: {_explain(signals[n])}" for n in drifted)
        else:
            verdict = NO_DRIFT
            reason = (
                "no signal in retrain_on drifted ("
                + ", ".join(f"{n} {s.status}" for n, s in signals.items())
                + ")"
            )

        def html_writer(path: Path) -> None:
            comp.snapshot.save_html(str(path))

    drifted = [n for n, s in signals.items() if s.status == "drift" and n in pol.retrain_on]
    action = _retrain(
        trigger,
        pol,
        verdict,
        drifted,
        model_version=model_version,
        since=since_s,
        until=until_s,
        state_root=state_root,
        report_uri=out,
        reference_uri=ref.uri,
        endpoint_url=endpoint_url,
        now=now,
    )
    drift = {
        "schema": "cscl.drift/v1",
        "cscl_version": __version__,
        "model_version": model_version,
        "window": {"since": since_s, "until": until_s},
        "verdict": verdict,
        "reason": reason,
        "sample_sizes": {
            "reference": len(ref),
            "current": len(window),
            "labelled": int(label_df.notna().any(axis=1).sum()) if label_df is not None else 0,
        },
        "records": window.counts(),
        "signals": {n: s.to_dict() for n, s in signals.items()},
        "retraining": action,
        "reference": ref.uri,
        "logs": logs,
        "policy": pol.raw,
        "report_html": f"{out}/drift.html",
        "created": now.isoformat(),
    }
    _write_report(out, html_writer, drift, endpoint_url)
    return MonitoringResult(verdict, reason, out, drift, action)


def _explain(s: SignalResult) -> str:
    if s.columns:
        return s.reason
    return f"{s.method} = {s.value:.3f} > {s.threshold:.3f}"


def demo_monitoring(
    logs: str,
    reference: str,
    model_version: str,
    *,
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    out: str | None = None,
    min_samples: int = 10,
    endpoint_url: str | None = None,
) -> MonitoringResult:
    """The last step of `make demo`: one monitoring run (report only) and its verdict printed.

    Uses the default policy with `min_samples` lowered to the demo's cohort size. `since`
    defaults to 7 days before `until` (default: today UTC).
    """
    today = st.utcnow().date()
    until_d = parse_date(until or today, "--until")
    since_d = parse_date(since or (until_d - dt.timedelta(days=7)), "--since")
    policy = load_policy({"min_samples": int(min_samples), "min_reference": int(min_samples)})
    res = run_monitoring(
        model_version=model_version,
        logs=logs,
        reference=reference,
        since=since_d,
        until=until_d,
        policy=policy,
        out=out,
        endpoint_url=endpoint_url,
        progress=False,
    )
    print(res.summary())
    return res
