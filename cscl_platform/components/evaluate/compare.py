"""Candidate vs current model on one evaluation (plain Python behind `compare_models`).

Why a separate rule: promotion must be a decision people can read — both scores, the
difference, the paired tests from cscl.eval and the threshold — not a silent comparison.
"""

from __future__ import annotations

import math


def quality_score(flat: dict[str, float], method: str, metric: str = "kfold_auc") -> float:
    """Mean over tasks of `<task>.<method>.<metric>`; NaN when no task produced it."""
    vals = [v for k, v in flat.items() if k.endswith(f".{method}.{metric}") and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def compare(
    flat: dict[str, float],
    candidate: str = "candidate",
    current: str = "current",
    metric: str = "kfold_auc",
    min_improvement: float = 0.0,
) -> tuple[bool, str, dict[str, float]]:
    """(promote?, Markdown report, numbers). Promote when the candidate's score beats the
    current one by more than `min_improvement` (a current model without a score loses)."""
    new, cur = quality_score(flat, candidate, metric), quality_score(flat, current, metric)
    if math.isnan(new):
        promote, why = False, f"the candidate has no {metric}"
    elif math.isnan(cur):
        promote, why = True, f"the current model has no {metric} on this cohort"
    else:
        promote = new - cur > min_improvement
        why = (
            f"{new:.4f} − {cur:.4f} = {new - cur:+.4f} {'>' if promote else '≤'} {min_improvement}"
        )
    lines = [
        f"# Retraining: candidate vs current ({'PROMOTE' if promote else 'KEEP CURRENT'})",
        "",
        f"Rule: promote when mean `{metric}` improves by more than {min_improvement}: {why}.",
        "",
        "| task | metric | candidate | current |",
        "|---|---|---|---|",
    ]
    tasks = sorted({k.split(".")[0] for k in flat if f".{candidate}." in k})
    for t in tasks:
        for m in (metric, "kfold_balanced_accuracy", "cindex"):
            a, b = flat.get(f"{t}.{candidate}.{m}"), flat.get(f"{t}.{current}.{m}")
            if a is not None or b is not None:
                lines.append(f"| {t} | {m} | {_f(a)} | {_f(b)} |")
    tests = {k: v for k, v in flat.items() if f".{candidate}_vs_{current}." in k}
    if tests:
        lines += ["", "Paired tests (one-sided, candidate > current):", ""]
        lines += [f"- `{k}`: p = {v:.4g}" for k, v in sorted(tests.items())]
    numbers = {"candidate_score": new, "current_score": cur, "promote": float(promote)}
    return promote, "\n".join(lines) + "\n", numbers


def _f(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
