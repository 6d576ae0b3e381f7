"""What a monitoring run does about a drift verdict: nothing, or start ONE retraining.

At most one retraining per (model version, window): the run first *creates* the window's state
object (`cscl.monitoring.state`, a create-only write); only the run that created it triggers, a
retried run reports `already_triggered`. Within `retraining.cooldown_hours` of a retraining for
another window nothing is started (`skipped_cooldown`). A trigger that fails outright releases
the claim so the next run can try again. Every outcome says what was done and why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cscl.errors import InputError
from cscl.io import storage
from cscl.monitoring import state as st
from cscl.monitoring.policy import Policy
from cscl.monitoring.verdict import DRIFT, NO_DRIFT
from cscl_platform.monitoring.trigger import (
    GithubTarget,
    KfpTarget,
    TriggerError,
    trigger_github,
    trigger_kfp,
)


@dataclass
class TriggerConfig:
    """What to do on drift: mode "none" (report only), "kfp" or "github"."""

    mode: str = "none"
    kfp: KfpTarget | None = None
    github: GithubTarget | None = None
    force: bool = False  # re-arm a window whose trigger was claimed before


def model_dir_of(reference_uri: str) -> str:
    """`…/models/<name>/<version>/` from its `bundle/reference.parquet` (the retraining pipeline's
    `current_model_uri`: the model to beat)."""
    d = reference_uri.rsplit("/", 1)[0]
    return (d[: -len("/bundle")] if d.endswith("/bundle") else d) + "/"


def storage_delete(uri: str) -> None:
    """Delete one object or file (releasing a claim). Moves into cscl.io.storage (issue 13)."""
    if storage.is_s3(uri):
        bucket, key = storage.parse_s3_uri(uri)
        storage.s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        storage.local_path(uri).unlink(missing_ok=True)


def _start(trigger: TriggerConfig, model_version: str, run_name: str, model_dir: str, why: str):
    """Start the retraining; (result, what was done). Raises TriggerError/InputError."""
    if trigger.mode == "kfp":
        if trigger.kfp is None:
            raise InputError("trigger mode kfp needs --kfp-host")
        result = trigger_kfp(trigger.kfp, run_name, {"current_model_uri": model_dir})
        return result, f"started Kubeflow run {result['run_id']} of {trigger.kfp.pipeline_name}"
    if trigger.mode == "github":
        if trigger.github is None:
            raise InputError("trigger mode github needs --github-repo")
        inputs = {"model_version": model_version, "reason": why[:1000]}
        result = trigger_github(trigger.github, inputs)
        return result, f"dispatched workflow {trigger.github.workflow} on {trigger.github.repo}"
    raise InputError(f"unknown trigger mode {trigger.mode!r}", hint="none, kfp or github")


def retrain(
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
    now: dt.datetime,
) -> dict[str, Any]:
    """Decide and maybe start one retraining; drift.json's `retraining` (action + reason)."""
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
    last = st.last_trigger(state_root, model_version)
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
        st.update_state(uri, claim)
    elif not st.create_state(uri, claim):
        prev = st.read_state(uri) or {}
        return {
            **base,
            "action": "already_triggered",
            "reason": f"this window already has a retraining ({prev.get('status')} at "
            f"{prev.get('claimed_at')}, {prev.get('mode')} {prev.get('result', {})}); "
            "not starting another",
            "previous": prev,
        }
    run_name = f"retrain-{model_version}-drift-{since}_{until}"
    why = f"drift in {drifted} for window {since}..{until}"
    try:
        result, what = _start(trigger, model_version, run_name, model_dir_of(reference_uri), why)
    except (TriggerError, InputError) as exc:
        # Nothing was started: release the claim so a retry can trigger.
        storage_delete(uri)
        return {**base, "action": "failed", "reason": f"{why}; trigger failed: {exc}"}
    st.update_state(uri, {**claim, "status": "triggered", "result": result})
    return {**base, "action": "triggered", "reason": f"{why}: {what}", "result": result}
