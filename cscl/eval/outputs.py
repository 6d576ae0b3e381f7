"""Write an evaluation: predictions.parquet, PNG plots, report.html, triage.json/.html (IHC
triage, when an IHC-status task was evaluated) and metrics.json.

metrics.json is written last, so its presence means the folder is complete; every file is
written atomically (`storage.atomic_path`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from cscl.eval import plots
from cscl.eval.headline import ReportOptions
from cscl.eval.pvalues import p_clause
from cscl.eval.report import write_report as write_html_report
from cscl.eval.tasks import CLASSIFICATION
from cscl.eval.triage_report import write_triage
from cscl.io.storage import atomic_path
from cscl.runtime import jsonable

LEAD_COLUMNS = ["method", "task", "protocol", "case_id", "fold"]


def write_outputs(
    metrics: dict,
    predictions: list[pd.DataFrame],
    out_dir: str | Path,
    report: bool = True,
    options: ReportOptions | None = None,
) -> dict:
    """Write everything under `out_dir`; return the strict-JSON metrics (= metrics.json).

    `options` (score metric, quality gate, survival time unit) shape report.html only."""
    options = options or ReportOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preds = pooled_predictions(predictions)
    with atomic_path(out / "predictions.parquet") as tmp:
        preds.to_parquet(tmp, index=False)
    metrics = jsonable(metrics)
    if report:
        write_plots(metrics, preds, out, options.time_unit)
        write_html_report(metrics, out, options)
    write_triage(metrics, out, html=report)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False))
    return metrics


def pooled_predictions(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """All out-of-fold predictions in one table, the identifying columns first."""
    if not frames:
        return pd.DataFrame(columns=LEAD_COLUMNS)
    preds = pd.concat(frames, ignore_index=True)
    return preds[LEAD_COLUMNS + [c for c in preds.columns if c not in LEAD_COLUMNS]]


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)).strip("-") for p in parts)


def write_plots(
    metrics: dict, preds: pd.DataFrame, out: Path, time_unit: str | None = None
) -> None:
    """PNG files beside report.html; their names are recorded under tasks[t]['plots'] (and the
    Kaplan–Meier numbers at risk under tasks[t]['plots']['km_at_risk'][method])."""
    for task, entry in metrics["tasks"].items():
        if entry["type"] == CLASSIFICATION:
            entry["plots"] = _classification_plots(task, entry["results"], out)
        else:
            entry["plots"] = _survival_plots(task, entry, preds, out, time_unit)


def _classification_plots(task: str, res: dict, out: Path) -> dict:
    figs: dict = {}
    curves = {}
    for n, r in res.items():
        kf = r.get("kfold")
        if not kf:
            continue
        if kf.get("roc"):
            auc = kf["metrics"]["auc"]
            ci = (auc["ci_low"], auc["ci_high"]) if auc["ci_low"] is not None else None
            curves[n] = {
                "fpr": kf["roc"]["fpr"],
                "tpr": kf["roc"]["tpr"],
                "auc": auc["value"],
                "ci": ci,
            }
        name = f"{_slug(task, n)}_confusion.png"
        plots.confusion_png(
            kf["confusion"]["matrix"],
            kf["confusion"]["categories"],
            out / name,
            f"{task} — {n} (pooled out-of-fold)",
        )
        figs.setdefault("confusion", {})[n] = name
    if curves:
        name = f"{_slug(task)}_roc.png"
        pos = next(r["kfold"]["roc"]["positive_class"] for r in res.values() if "kfold" in r)
        plots.roc_png(curves, out / name, f"{task}: ROC, positive = {pos}")
        figs["roc"] = name
    series = {}
    for n, r in res.items():
        ok = [row for row in r.get("fewshot", []) if row["status"] == "ok"]
        if ok:
            series[n] = {
                "k": [row["k"] for row in ok],
                "mean": [row["auc_mean"] for row in ok],
                "std": [row["auc_std"] for row in ok],
            }
    if series:
        name = f"{_slug(task)}_fewshot.png"
        plots.fewshot_png(series, out / name, f"{task}: few-shot AUC (mean ± std)")
        figs["fewshot"] = name
    return figs


def time_axis_label(task: str, time_unit: str | None) -> str:
    """`time (months)` when the unit is known; else the column the times come from, because the
    labels table does not say whether it counts days or months."""
    return f"time ({time_unit})" if time_unit else f"{task}_time (unit of the labels table)"


def _survival_plots(
    task: str, entry: dict, preds: pd.DataFrame, out: Path, time_unit: str | None
) -> dict:
    figs: dict = {}
    for n, r in entry["results"].items():
        sv = r.get("survival")
        if not sv:
            continue
        p = preds[(preds["task"] == task) & (preds["method"] == n)]
        name = f"{_slug(task, n)}_km.png"
        table = plots.km_png(
            p["time"].to_numpy(float),
            p["event"].to_numpy(int),
            p["risk_group"].to_numpy(str),
            out / name,
            f"{task} — {n}: risk groups (median split of out-of-fold risk)",
            p_clause(sv["logrank"]["p_value"], n_cases=entry["n_cases"]),
            time_axis_label(task, time_unit),
        )
        figs.setdefault("km", {})[n] = name
        figs.setdefault("km_at_risk", {})[n] = table
    return figs
