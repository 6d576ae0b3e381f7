"""What the top of the evaluation report says: each method's quality score, the gate verdict
when a gate is known, and per task the primary metric of every method with the best marked.

Why a module of its own: the headline is computed from metrics.json with the same rules the
pipelines use (`cscl.eval.quality.score_summary`; a baseline gate is
`cscl.eval.quality.compare_models`), so the report cannot disagree with the gate that acts on
it. The HTML is made in `cscl.eval.report`; this module only decides what to say.
"""

from __future__ import annotations

from dataclasses import dataclass

from cscl.eval.metrics import method_values, primary_metric
from cscl.eval.quality import DEFAULT_SCORE_METRIC, QualityScore, compare_models, score_summary


@dataclass(frozen=True)
class QualityGate:
    """The rule a pipeline applies to this evaluation, so the report can say whether it passed.

    `min_score`: the training pipeline's gate (primary's quality score ≥ min_score).
    `baseline`: the retraining rule (primary's score − baseline's > `min_improvement`).
    Both may be set; the gate passes when every rule set passes.
    """

    min_score: float | None = None
    baseline: str | None = None
    min_improvement: float = 0.0


@dataclass(frozen=True)
class ReportOptions:
    """Settings of report.html that metrics.json does not hold.

    `time_unit`: unit of the survival times (`<task>_time` column), shown on the Kaplan–Meier
    axis; None labels the axis with the column name, because the labels table does not say
    whether it holds days or months.
    """

    score_metric: str = DEFAULT_SCORE_METRIC
    gate: QualityGate | None = None
    time_unit: str | None = None


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: list[str]  # one sentence per rule, with the numbers


def gate_verdict(metrics: dict, gate: QualityGate, score_metric: str) -> GateVerdict:
    """Apply `gate` to the primary method of `metrics`: passed, and why, in plain words."""
    primary = metrics["primary"]
    score = score_summary(metrics, primary, score_metric)
    passed, reasons = True, []
    if gate.min_score is not None:
        ok = score.gate_value() >= gate.min_score
        passed &= ok
        if not score.defined:
            reasons.append(f"{primary} has no {score_metric} on any task (no quality score)")
        else:
            sign = "≥" if ok else "<"
            reasons.append(
                f"{primary}'s quality score {score.value:.3f} {sign} the threshold "
                f"{gate.min_score:g}"
            )
    if gate.baseline is not None:
        cmp = compare_models(metrics, primary, gate.baseline, score_metric, gate.min_improvement)
        passed &= cmp.promote
        verb = "beats" if cmp.promote else "does not beat"
        reasons.append(
            f"{primary} {verb} {gate.baseline} by more than {gate.min_improvement:g} ({cmp.reason})"
        )
    return GateVerdict(passed, reasons)


def quality_scores(metrics: dict, score_metric: str) -> list[QualityScore]:
    """Every method's quality score, the primary first."""
    return [score_summary(metrics, m, score_metric) for m in metrics["methods"]]


@dataclass(frozen=True)
class TaskRow:
    """One task of the headline table: its primary metric for every method."""

    task: str
    kind: str
    n_cases: int
    metric: str
    values: dict[str, tuple[float | None, float | None, float | None]]  # method → value, CI

    @property
    def best(self) -> list[str]:
        """The method(s) with the highest value (ties: all of them); none without values."""
        found = {m: v[0] for m, v in self.values.items() if v[0] is not None}
        if not found:
            return []
        top = max(found.values())
        return [m for m, v in found.items() if v == top]


def task_rows(metrics: dict, score_metric: str) -> list[TaskRow]:
    rows = []
    for task, entry in metrics["tasks"].items():
        metric = primary_metric(entry, score_metric)
        values = {}
        for m in metrics["methods"]:
            named = method_values(entry.get("results", {}).get(m, {}))
            values[m] = (
                named.get(metric),
                named.get(f"{metric}_ci_low"),
                named.get(f"{metric}_ci_high"),
            )
        rows.append(TaskRow(task, entry["type"], int(entry["n_cases"]), metric, values))
    return rows
