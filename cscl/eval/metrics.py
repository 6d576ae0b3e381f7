"""Named numbers read from a metrics.json dict: the one place metric names are made.

`method_values` names the values of one method on one task (`kfold_auc`, `cindex`,
`fewshot_k5_auc`, …); the flat KFP view, the quality score and the model comparison all read
values through it, so a name means the same number everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # quality.py imports this module: the type only, no import cycle at run time
    from cscl.eval.quality import QualityScore

# The classification tasks of the reference cohort: the evaluate component has one
# ClassificationMetrics output for each (a KFP component has a fixed set of outputs).
REFERENCE_CLASSIFICATION_TASKS = (
    "er_status",
    "pgr_status",
    "her2_status",
    "ki67_status",
    "subtype",
)


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def method_values(result: dict) -> dict[str, float]:
    """Finite values of one method on one task (`metrics.tasks[t].results[method]`), by name.

    Names: `kfold_<metric>` (+ `_ci_low`, `_ci_high`), `fewshot_k<k>_auc`,
    `fewshot_k<k>_balanced_accuracy`, `cindex` (+ `_ci_low`, `_ci_high`), `logrank_p`, and the
    IHC triage figures of binary `<marker>_status` tasks (`_triage_values`).
    A value that is missing, None (NaN in metrics.json) or not finite has no entry.
    """
    named: dict[str, object] = {}
    for m, v in (result.get("kfold") or {}).get("metrics", {}).items():
        named[f"kfold_{m}"] = v["value"]
        named[f"kfold_{m}_ci_low"] = v["ci_low"]
        named[f"kfold_{m}_ci_high"] = v["ci_high"]
    for row in result.get("fewshot", []):
        if row.get("status") == "ok":
            named[f"fewshot_k{row['k']}_auc"] = row["auc_mean"]
            named[f"fewshot_k{row['k']}_balanced_accuracy"] = row["balanced_accuracy_mean"]
    named.update(_triage_values((result.get("kfold") or {}).get("triage")))
    sv = result.get("survival")
    if sv:
        named["cindex"] = sv["cindex"]["value"]
        named["cindex_ci_low"] = sv["cindex"]["ci_low"]
        named["cindex_ci_high"] = sv["cindex"]["ci_high"]
        named["logrank_p"] = sv["logrank"]["p_value"]
    return {k: float(v) for k, v in named.items() if _finite(v)}


def _triage_values(tr: dict | None) -> dict[str, object]:
    """Names of the IHC triage figures (cscl.eval.triage): `triage_brier` (+ `_ci_low`,
    `_ci_high`), `triage_brier_uncalibrated`, and per target sensitivity s (90, 95, 99)
    `triage_skip_fraction_sens<s>` (+ `_ci_low`, `_ci_high`), `triage_npv_sens<s>`,
    `triage_missed_positives_sens<s>`, `triage_threshold_sens<s>`."""
    if not tr:
        return {}
    b = tr["calibration"]["brier"]
    named: dict[str, object] = {
        "triage_brier": b["value"],
        "triage_brier_ci_low": b["ci_low"],
        "triage_brier_ci_high": b["ci_high"],
        "triage_brier_uncalibrated": tr["calibration"]["brier_uncalibrated"],
    }
    for row in tr["operating_points"]:
        s = f"sens{round(100 * row['target_sensitivity'])}"
        sk = row["skip_fraction"]
        named[f"triage_skip_fraction_{s}"] = sk["value"]
        named[f"triage_skip_fraction_{s}_ci_low"] = sk["ci_low"]
        named[f"triage_skip_fraction_{s}_ci_high"] = sk["ci_high"]
        for key in ("npv", "missed_positives", "threshold"):
            named[f"triage_{key}_{s}"] = row[key]["value"]
    return named


def flat_metrics(metrics: dict) -> dict[str, float]:
    """Flat name → float for a KFP `Metrics` artifact (`log_metric(name, value)`).

    Names: `<task>.<method>.<metric>` (see `method_values`), plus
    `<task>.<primary>_vs_<other>.<paired scores>_p` for the Wilcoxon p-values.
    """
    flat: dict[str, float] = {}
    primary = metrics.get("primary")
    for task, entry in metrics.get("tasks", {}).items():
        for n, r in entry.get("results", {}).items():
            flat.update({f"{task}.{n}.{k}": v for k, v in method_values(r).items()})
        for other, tests in entry.get("comparisons", {}).items():
            for key, res in tests.items():
                if _finite(res.get("p_value")):
                    flat[f"{task}.{primary}_vs_{other}.{key}_p"] = float(res["p_value"])
    return flat


def classification_artifacts(metrics: dict, method: str | None = None) -> dict[str, dict]:
    """Per classification task of one method (default: the primary): arguments for KFP
    `ClassificationMetrics`: {"roc": {fpr, tpr, threshold}} (binary tasks only) for
    `log_roc_curve(fpr, tpr, threshold)` and {"confusion": {categories, matrix}} for
    `log_confusion_matrix(categories, matrix)`."""
    method = method or metrics.get("primary")
    out: dict[str, dict] = {}
    for task, entry in metrics.get("tasks", {}).items():
        kf = entry.get("results", {}).get(method, {}).get("kfold")
        if not kf:
            continue
        item = {"confusion": kf["confusion"]}
        if kf.get("roc"):
            roc = kf["roc"]
            item["roc"] = {k: roc[k] for k in ("fpr", "tpr", "threshold")}
        out[task] = item
    return out


@dataclass(frozen=True)
class TaskHeadline:
    """The one number a task is judged by (its primary metric), for the method and a baseline."""

    task: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    baseline: str | None
    baseline_value: float | None
    p_value: float | None  # one-sided paired test, method > baseline
    chance: float | None  # the value a model without signal gets (None: no such level)

    @property
    def at_or_below_chance(self) -> bool:
        """True when the method's value is no better than guessing (AUC or C-index ≤ 0.5, …)."""
        return self.value is not None and self.chance is not None and self.value <= self.chance


def primary_metric(entry: dict, score_metric: str = "kfold_auc") -> str:
    """The metric a task of metrics.json is judged by: `cindex` for a survival task, the
    quality-score metric for a classification task (`kfold_auc` when that metric is `cindex`)."""
    if entry.get("type") == "survival":
        return "cindex"
    return "kfold_auc" if score_metric == "cindex" else score_metric


def _chance(metric: str, entry: dict) -> float | None:
    if metric.endswith("auc") or metric == "cindex":
        return 0.5
    if metric.endswith("balanced_accuracy") and entry.get("classes"):
        return 1.0 / len(entry["classes"])
    return None


def task_headlines(
    metrics: dict, method: str | None = None, score_metric: str = "kfold_auc"
) -> list[TaskHeadline]:
    """Per task of a metrics.json dict: primary metric of `method` (default: the primary) with
    its CI, the first other method's value (the baseline) and the paired test p-value."""
    method = method or metrics.get("primary")
    others = [m for m in metrics.get("methods", []) if m != method]
    baseline = others[0] if others else None
    rows = []
    for task, entry in metrics.get("tasks", {}).items():
        metric = primary_metric(entry, score_metric)
        results = entry.get("results", {})
        mine = method_values(results.get(method, {}))
        theirs = method_values(results.get(baseline, {})) if baseline else {}
        tests = entry.get("comparisons", {}).get(baseline, {}) if baseline else {}
        p = next(
            (
                tests[k].get("p_value")
                for k in (f"{metric}_bootstrap", f"{metric}_folds")
                if k in tests
            ),
            None,
        )
        rows.append(
            TaskHeadline(
                task,
                metric,
                mine.get(metric),
                mine.get(f"{metric}_ci_low"),
                mine.get(f"{metric}_ci_high"),
                baseline,
                theirs.get(metric),
                float(p) if _finite(p) else None,
                _chance(metric, entry),
            )
        )
    return rows


def headline_metrics(
    metrics: dict, score: QualityScore, gate=None, verdict=None
) -> dict[str, float]:
    """The few numbers a KFP `Metrics` artifact shows (the full set stays in metrics.json and
    the HTML report): the quality score, the gate's settings and result (`gate`: a
    `cscl.eval.headline.QualityGate`, `verdict`: its `gate_verdict`), and per task the primary
    metric of the method and baseline.

    Names: `quality_score`, `quality_score_tasks`, `gate_min_score`, `gate_min_gain` and
    `gate_baseline_score` (baseline rule), `gate_passed` (1.0/0.0), `<task>.<method>.<metric>`,
    `<task>.<baseline>.<metric>`.
    """
    out = {"quality_score": score.gate_value(), "quality_score_tasks": float(len(score.counted))}
    if gate is not None:
        if gate.min_score is not None:
            out["gate_min_score"] = float(gate.min_score)
        if gate.baseline is not None:
            from cscl.eval.quality import score_summary  # quality.py imports this module

            out["gate_min_gain"] = float(gate.min_improvement)
            out["gate_baseline_score"] = score_summary(metrics, gate.baseline,
                                                       score.metric).gate_value()  # fmt: skip
        if verdict is not None:
            out["gate_passed"] = float(verdict.passed)
    for row in task_headlines(metrics, score.method, score.metric):
        if row.value is not None:
            out[f"{row.task}.{score.method}.{row.metric}"] = row.value
        if row.baseline_value is not None:
            out[f"{row.task}.{row.baseline}.{row.metric}"] = row.baseline_value
    return out


def reference_classification_artifacts(metrics: dict, method: str | None = None) -> dict[str, dict]:
    """`classification_artifacts` for each of REFERENCE_CLASSIFICATION_TASKS; a task without
    one gets {"note": why} so its (fixed) KFP output says why it is empty."""
    arts = classification_artifacts(metrics, method)
    out = {}
    for task in REFERENCE_CLASSIFICATION_TASKS:
        if task in arts:
            out[task] = arts[task]
        elif task in metrics.get("tasks", {}):
            out[task] = {
                "note": f"{task}: no k-fold result for this method (see metrics.json notes)"
            }
        else:
            out[task] = {"note": f"{task} was not evaluated in this run"}
    return out
