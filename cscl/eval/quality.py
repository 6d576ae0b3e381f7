"""The quality score of a model in one evaluation, and the promotion rule built on it.

The score is what the training pipeline's quality gate compares with `min_score` and what the
retraining pipeline compares between the candidate and the current model, so it is computed here
once, from the structured metrics (`cscl.eval.metrics.method_values`).

**Score** = mean over the evaluation's tasks of the method's `metric` (default `kfold_auc`).

**NaN rule** (the only one): a task counts only if the method has a finite value of `metric`
on it. A task whose value is missing (protocol not run, a few-shot k skipped, survival task
under an AUC), None in metrics.json or NaN neither lowers nor raises the mean; it is listed in
`QualityScore.tasks_without_value`. A method with no counted task has *no score* (`value` NaN,
`defined` False): it fails the quality gate and never wins a comparison.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from cscl.errors import InputError
from cscl.eval.bootstrap import CLASS_METRICS
from cscl.eval.metrics import method_values
from cscl.eval.pvalues import format_p

DEFAULT_SCORE_METRIC = "kfold_auc"
_SCORE_METRIC = re.compile(
    rf"^(kfold_({'|'.join(CLASS_METRICS)})|fewshot_k\d+_(auc|balanced_accuracy)|cindex)$"
)


@dataclass(frozen=True)
class QualityScore:
    """One method's score with the per-task values it was averaged from."""

    method: str
    metric: str
    per_task: dict[str, float | None]  # every task of the evaluation; None: no finite value

    @property
    def counted(self) -> dict[str, float]:
        return {t: v for t, v in self.per_task.items() if v is not None}

    @property
    def tasks_without_value(self) -> list[str]:
        return [t for t, v in self.per_task.items() if v is None]

    @property
    def defined(self) -> bool:
        return bool(self.counted)

    @property
    def value(self) -> float:
        vals = list(self.counted.values())
        return sum(vals) / len(vals) if vals else math.nan

    def gate_value(self) -> float:
        """The score as a KFP output: outputs cannot carry NaN, so *no score* is 0.0 — the
        floor of AUC, balanced accuracy and C-index — which passes no gate with min_score > 0."""
        return self.value if self.defined else 0.0

    def describe(self) -> str:
        if not self.defined:
            return f"{self.method}: no task produced {self.metric} (no quality score)"
        text = (
            f"{self.method}: mean {self.metric} = {self.value:.4f} over {len(self.counted)} task(s)"
        )
        if self.tasks_without_value:
            text += f"; without a value: {', '.join(self.tasks_without_value)}"
        return text


def check_score_metric(metric: str) -> str:
    """`metric` if it can rank models (higher is better), else an InputError."""
    if not _SCORE_METRIC.match(metric):
        raise InputError(
            f"{metric!r} is not a quality-score metric",
            hint=f"use kfold_<{'|'.join(CLASS_METRICS)}>, fewshot_k<k>_auc, "
            "fewshot_k<k>_balanced_accuracy or cindex",
        )
    return metric


def _method(metrics: dict, method: str | None) -> str:
    method = method or metrics.get("primary")
    methods = metrics.get("methods", [])
    if method not in methods:
        raise InputError(
            f"method {method!r} is not in this evaluation (methods: {methods})",
            hint="pass the name the embeddings table was evaluated under",
        )
    return method


def score_summary(
    metrics: dict, method: str | None = None, metric: str = DEFAULT_SCORE_METRIC
) -> QualityScore:
    """The quality score of `method` (default: the primary) in a metrics.json dict."""
    method, metric = _method(metrics, method), check_score_metric(metric)
    per_task = {
        task: method_values(entry.get("results", {}).get(method, {})).get(metric)
        for task, entry in metrics.get("tasks", {}).items()
    }
    return QualityScore(method, metric, per_task)


def quality_score(
    metrics: dict, method: str | None = None, metric: str = DEFAULT_SCORE_METRIC
) -> float:
    """Mean `metric` of `method` over the tasks with a finite value; NaN if none (module doc)."""
    return score_summary(metrics, method, metric).value


@dataclass(frozen=True)
class Comparison:
    """Candidate vs current model on one evaluation: the decision and what it rests on."""

    candidate: QualityScore
    current: QualityScore
    min_improvement: float
    promote: bool
    reason: str
    table: list[tuple[str, str, float | None, float | None]]  # task, metric, candidate, current
    tests: dict[str, dict[str, float | None]]  # task → paired scores → p (candidate > current)

    def numbers(self) -> dict[str, float]:
        """Finite numbers for a KFP `Metrics` artifact."""
        nums = {
            "candidate_score": self.candidate.value,
            "current_score": self.current.value,
            "promote": float(self.promote),
        }
        return {k: v for k, v in nums.items() if math.isfinite(v)}

    def markdown(self) -> str:
        c = self.candidate
        lines = [
            f"# Retraining: candidate vs current ({'PROMOTE' if self.promote else 'KEEP CURRENT'})",
            "",
            f"Rule: promote when mean `{c.metric}` improves by more than "
            f"{self.min_improvement}: {self.reason}.",
            "",
            "| task | metric | candidate | current |",
            "|---|---|---|---|",
        ]
        lines += [f"| {t} | {m} | {_f(a)} | {_f(b)} |" for t, m, a, b in self.table]
        tests = [(t, k, p) for t, ps in self.tests.items() for k, p in ps.items()]
        if tests:
            lines += ["", "Paired tests (one-sided Wilcoxon, candidate > current):", ""]
            lines += [f"- {t} `{k}`: {_p(p)}" for t, k, p in tests]
        return "\n".join(lines) + "\n"


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _p(v: float | None) -> str:
    """`p = 0.042` or `p < 0.001` (cscl.eval.pvalues rules: never 0.000 or 1.8e-06)."""
    text = format_p(v)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _decide(new: QualityScore, cur: QualityScore, min_improvement: float) -> tuple[bool, str]:
    if not new.defined:
        return False, f"the candidate has no {new.metric}"
    if not cur.defined:
        return True, f"the current model has no {cur.metric} on this cohort"
    diff = new.value - cur.value
    promote = diff > min_improvement
    sign = ">" if promote else "≤"
    return promote, f"{new.value:.4f} − {cur.value:.4f} = {diff:+.4f} {sign} {min_improvement}"


def compare_models(
    metrics: dict,
    candidate: str = "candidate",
    current: str = "current",
    metric: str = DEFAULT_SCORE_METRIC,
    min_improvement: float = 0.0,
) -> Comparison:
    """Promote the candidate when its quality score beats the current model's by more than
    `min_improvement`; a candidate without a score never wins, a current model without one loses.

    Why a readable object, not a bool: promotion replaces a deployed model, so people must see
    both scores, the difference, the per-task values and the paired tests behind it.
    """
    new, cur = score_summary(metrics, candidate, metric), score_summary(metrics, current, metric)
    promote, reason = _decide(new, cur, min_improvement)
    table = []
    for task, entry in metrics.get("tasks", {}).items():
        res = entry.get("results", {})
        a, b = method_values(res.get(candidate, {})), method_values(res.get(current, {}))
        for m in dict.fromkeys((metric, "kfold_balanced_accuracy", "cindex")):
            if m in a or m in b:
                table.append((task, m, a.get(m), b.get(m)))
    tests = {}
    if metrics.get("primary") == candidate:  # the evaluation tests primary > each other method
        for task, entry in metrics.get("tasks", {}).items():
            found = entry.get("comparisons", {}).get(current, {})
            if found:
                tests[task] = {k: r.get("p_value") for k, r in found.items()}
    return Comparison(new, cur, min_improvement, promote, reason, table, tests)
