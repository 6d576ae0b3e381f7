"""Named numbers read from a metrics.json dict: the one place metric names are made.

`method_values` names the values of one method on one task (`kfold_auc`, `cindex`,
`fewshot_k5_auc`, …); the flat KFP view, the quality score and the model comparison all read
values through it, so a name means the same number everywhere.
"""

from __future__ import annotations

import math


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def method_values(result: dict) -> dict[str, float]:
    """Finite values of one method on one task (`metrics.tasks[t].results[method]`), by name.

    Names: `kfold_<metric>` (+ `_ci_low`, `_ci_high`), `fewshot_k<k>_auc`,
    `fewshot_k<k>_balanced_accuracy`, `cindex` (+ `_ci_low`, `_ci_high`), `logrank_p`.
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
    sv = result.get("survival")
    if sv:
        named["cindex"] = sv["cindex"]["value"]
        named["cindex_ci_low"] = sv["cindex"]["ci_low"]
        named["cindex_ci_high"] = sv["cindex"]["ci_high"]
        named["logrank_p"] = sv["logrank"]["p_value"]
    return {k: float(v) for k, v in named.items() if _finite(v)}


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
