"""The verdict of one window: "insufficient data", "no drift" or "drift", with the reason.

"insufficient data" when the window has fewer usable records than the policy's `min_samples` or
the reference fewer rows than `min_reference`: no verdict is given, nothing is triggered.
Otherwise "drift" when a signal named in the policy's `retrain_on` drifted, else "no drift".
What to do about a drift verdict (retraining, its idempotency) is the platform's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from cscl.monitoring.drift import DriftPlan, SignalResult, compute_drift
from cscl.monitoring.logs import LogWindow
from cscl.monitoring.policy import Policy
from cscl.monitoring.reference import ReferenceSet

NO_DRIFT, DRIFT, INSUFFICIENT = "no drift", "drift", "insufficient data"


@dataclass
class Verdict:
    verdict: str
    reason: str
    signals: dict[str, SignalResult] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)  # drifted signals named in retrain_on
    plan: DriftPlan | None = None  # None when there was too little data to test


def _insufficient(ref: ReferenceSet, window: LogWindow, policy: Policy) -> str | None:
    if len(window) < policy.min_samples:
        return (
            f"{len(window)} usable log records in the window, the policy needs "
            f"{policy.min_samples} (files {window.files}, skipped {sum(window.skipped.values())})"
        )
    if len(ref) < policy.min_reference:
        return f"reference set has {len(ref)} rows, the policy needs {policy.min_reference}"
    return None


def _explain(s: SignalResult) -> str:
    if s.columns:
        return s.reason
    return f"{s.method} = {s.value:.3f} > {s.threshold:.3f}"


def judge(
    ref: ReferenceSet, window: LogWindow, policy: Policy, labels: pd.DataFrame | None = None
) -> Verdict:
    """Test the window against the reference under `policy` and say what it means."""
    short = _insufficient(ref, window, policy)
    if short:
        return Verdict(INSUFFICIENT, short)
    comp = compute_drift(ref, window, policy, labels)
    signals = comp.signals
    drifted = [n for n, s in signals.items() if s.status == "drift" and n in policy.retrain_on]
    if drifted:
        reason = "; ".join(f"{n}: {_explain(signals[n])}" for n in drifted)
        return Verdict(DRIFT, reason, signals, drifted, comp.plan)
    reason = (
        "no signal in retrain_on drifted ("
        + ", ".join(f"{n} {s.status}" for n, s in signals.items())
        + ")"
    )
    return Verdict(NO_DRIFT, reason, signals, [], comp.plan)
