"""Model card (Markdown) from a bundle's bundle.json and the evaluation's metrics.json: what a
reviewer reads before promotion, headline first, with a warning for every task the model does
no better than chance on."""

from __future__ import annotations

import json
from pathlib import Path

from cscl.eval.metrics import TaskHeadline, task_headlines
from cscl.eval.pvalues import MIN_CASES_FOR_P, p_clause, too_few_cases
from cscl.eval.quality import DEFAULT_SCORE_METRIC, score_summary


def format_p(p: float | None, n_cases: int | None = None) -> str:
    """`p = 0.042`, `p < 0.001` (never 0.000), `p not interpretable (6 cases)` on fewer than
    MIN_CASES_FOR_P cases, `—` when untested: the rules of the HTML report (`cscl.eval.pvalues`)."""
    if p is None:
        return "—"
    return p_clause(p, n_cases=n_cases)


def _small_cohort(metrics: dict) -> str | None:
    n = (metrics.get("dataset") or {}).get("n_cases")
    if not too_few_cases(n):
        return None
    return (
        f"**WARNING: evaluated on only {n} cases** (fewer than {MIN_CASES_FOR_P}): the values "
        "below are unstable and their p-values are not interpretable."
    )


def _value(v: float | None, lo: float | None = None, hi: float | None = None) -> str:
    if v is None:
        return "—"
    ci = f" ({lo:.3f}–{hi:.3f})" if lo is not None and hi is not None else ""
    return f"{v:.3f}{ci}"


def _task_line(task: str, vocab: dict) -> str:
    classes = vocab.get("classes")
    kind = vocab.get("type") or "task"
    return f"- **{task}** ({kind})" + (f": {', '.join(map(str, classes))}" if classes else "")


def _warning(row: TaskHeadline) -> str:
    return (
        f"**WARNING: {row.task} is at or below chance** ({row.metric} {row.value:.3f} ≤ "
        f"{row.chance:.2f}): do not use this model's {row.task} predictions."
    )


def model_card(
    bundle_dir: str | Path,
    metrics: dict,
    model_uri: str,
    score_metric: str = DEFAULT_SCORE_METRIC,
) -> str:
    """A short Markdown card: identity, quality score, per-task table with CIs, the baseline and
    the paired test, chance warnings, data, preprocessing, tasks, limits."""
    doc = json.loads((Path(bundle_dir) / "bundle.json").read_text())
    pre, bb = doc.get("preprocessing", {}), doc.get("backbone", {})
    lines = [f"# Model card: {doc.get('name')} {doc.get('version')}", ""]
    rows = task_headlines(metrics, metrics.get("primary"), score_metric) if metrics else []
    warnings = [w for w in [_small_cohort(metrics)] if w]
    warnings += [_warning(r) for r in rows if r.at_or_below_chance]
    lines += [*(f"> {w}\n" for w in warnings)]
    if metrics:
        lines += [f"**Quality score**: {score_summary(metrics, None, score_metric).describe()}", ""]
    lines += [
        f"- Stored at: `{model_uri}`",
        f"- Created: {doc.get('created')}, git commit `{doc.get('git_commit')}`",
        f"- Slide encoder: {doc.get('model', {}).get('kind')} "
        f"(run {doc.get('model', {}).get('run_model_version')})",
        f"- Patch backbone: `{bb.get('name')}`"
        + (" (random init: for tests/demos only)" if bb.get("random_init") else ""),
        f"- Preprocessing: {pre.get('target_mpp')} µm/px, {pre.get('patch_size')} px patches, "
        f"extractor `{pre.get('extractor_hash')}`",
        f"- Training data fingerprint: `{doc.get('training_fingerprint')}`",
        "",
        "## Evaluation (bootstrap 95 % CI; p: one-sided paired test, model > baseline)",
        "",
    ]
    if rows:
        baseline = next((r.baseline for r in rows if r.baseline), None) or "baseline"
        lines += [
            f"| task | metric | value (95 % CI) | {baseline} | p-value |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            flag = " ⚠ chance" if r.at_or_below_chance else ""
            lines.append(
                f"| {r.task} | {r.metric} | {_value(r.value, r.ci_low, r.ci_high)}{flag} | "
                f"{_value(r.baseline_value)} | "
                f"{format_p(r.p_value, metrics['tasks'][r.task].get('n_cases'))} |"
            )
    else:
        lines.append("No evaluation was stored with this model.")
    lines += ["", "## Tasks", ""]
    tasks = doc.get("tasks") or {}
    lines += [_task_line(t, v or {}) for t, v in tasks.items()] or ["- none (embedding only)"]
    lines += [
        "",
        "## Intended use and limits",
        "",
        "Research use on H&E whole-slide images scanned like the training cohort (mpp, stain). "
        "Not a medical device. Predictions outside the training distribution are flagged by "
        "drift monitoring (reference set stored with the bundle).",
        "",
    ]
    return "\n".join(lines)
