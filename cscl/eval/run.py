"""`evaluate(...)`: every declared task × protocol × embeddings table → metrics.json, report.html,
PNGs and pooled out-of-fold predictions.parquet.

Several embeddings tables (the method first, then baselines or the current model) are evaluated
on the cases they all share, with the same folds, draws and bootstrap resamples, so their scores
are paired and the first table is tested against each other one with a one-sided Wilcoxon test.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cscl import __version__
from cscl.errors import InputError
from cscl.eval import plots
from cscl.eval.bootstrap import wilcoxon_greater
from cscl.eval.fewshot import few_shot
from cscl.eval.kfold import kfold_eval
from cscl.eval.survival import survival_eval
from cscl.eval.tasks import (
    CLASSIFICATION,
    SURVIVAL,
    Joined,
    classification_target,
    join,
    parse_tasks,
    survival_target,
)

PROTOCOLS = ("fewshot", "kfold", "survival")
EmbeddingsSource = str | Path | tuple[pd.DataFrame, np.ndarray]


def parse_protocols(spec: str | Iterable[str]) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = [p.strip().lower() for p in items if p.strip()]
    bad = [p for p in out if p not in PROTOCOLS]
    if bad or not out:
        raise InputError(f"unknown protocol(s) {bad or out}", hint=f"choose from {PROTOCOLS}")
    return out


def load_embeddings(source: EmbeddingsSource, endpoint_url: str | None = None):
    """(meta, X) from a local path, an s3:// URI, or an in-memory (meta, X) pair."""
    from cscl.embeddings import read_embeddings
    from cscl.io import storage

    if isinstance(source, tuple):
        return source
    if storage.is_s3(source):
        with tempfile.TemporaryDirectory() as tmp:
            local = storage.download(str(source), Path(tmp) / "embeddings.parquet", endpoint_url)
            return read_embeddings(local)
    path = storage.local_path(source)
    if not path.exists():
        raise InputError(f"embeddings table {path} does not exist", hint="run `cscl embed` first")
    return read_embeddings(path)


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)).strip("-") for p in parts)


def _jsonable(obj):
    """NaN/inf → None, numpy → Python, so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _fewshot_rows(df: pd.DataFrame) -> list[dict]:
    rows = []
    for rec in df.to_dict("records"):
        row = {k: v for k, v in rec.items() if not (isinstance(v, float) and math.isnan(v))}
        for k in ("k", "draws", "n_train", "n_test"):  # NaN of skipped rows made them floats
            if k in row:
                row[k] = int(row[k])
        rows.append(row)
    return rows


def evaluate(
    embeddings: Mapping[str, EmbeddingsSource] | EmbeddingsSource,
    labels_uri: str | Path | pd.DataFrame,
    tasks: str | Sequence[str],
    out_dir: str | Path,
    protocols: str | Sequence[str] = PROTOCOLS,
    *,
    folds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    boot_seed: int = 42,
    ks: Sequence[int] = (1, 5, 10, 25),
    draws: int = 10,
    fewshot_scale: bool = False,
    n_iter: int = 10,
    inner_folds: int = 5,
    cox_components: int | None = None,
    cox_alpha: float = 1.0,
    endpoint_url: str | None = None,
    progress: bool = False,
    write_report: bool = True,
    n_threads: int | None = 1,
) -> dict:
    """Evaluate, write the outputs under `out_dir`, and return the metrics dict (= metrics.json).

    `embeddings` maps a method name to its table; the first one is the method under test and
    the others are compared against it (Wilcoxon, one-sided: first > other). `n_threads` caps
    BLAS threads: the many small fits are slower with threaded BLAS (spin-waiting), not faster.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n_threads):
        return _evaluate(**{k: v for k, v in locals().items() if k != "threadpool_limits"})


def _evaluate(
    embeddings,
    labels_uri,
    tasks,
    out_dir,
    protocols,
    *,
    folds,
    n_boot,
    seed,
    boot_seed,
    ks,
    draws,
    fewshot_scale,
    n_iter,
    inner_folds,
    cox_components,
    cox_alpha,
    endpoint_url,
    progress,
    write_report,
    n_threads,
) -> dict:
    from cscl.io.manifest import load_labels

    if not isinstance(embeddings, Mapping):
        embeddings = {"cscl": embeddings}
    if not embeddings:
        raise InputError("no embeddings table given")
    protocols = parse_protocols(protocols)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = labels_uri.copy() if isinstance(labels_uri, pd.DataFrame) else None
    if labels is None:
        labels = load_labels(str(labels_uri), endpoint_url)
    elif "case_id" not in labels.columns:
        raise InputError("labels table has no case_id column")
    labels["case_id"] = labels["case_id"].astype(str)
    task_list = parse_tasks(tasks, labels)
    names = list(embeddings)

    loaded = {n: load_embeddings(src, endpoint_url) for n, src in embeddings.items()}
    joined0 = {n: join(meta, X, labels) for n, (meta, X) in loaded.items()}
    common = sorted(set.intersection(*(set(j.labels["case_id"]) for j in joined0.values())))
    if not common:
        raise InputError(f"the embeddings tables {names} share no labelled case")
    joined: dict[str, Joined] = {
        n: join(meta, X, labels, cases=common) for n, (meta, X) in loaded.items()
    }
    notes: list[str] = []
    dataset = {
        "labels": str(labels_uri) if not isinstance(labels_uri, pd.DataFrame) else "<dataframe>",
        "n_label_rows": int(len(labels)),
        "n_cases": len(common),
        "methods": {},
    }
    for n in names:
        c = dict(joined0[n].counts)
        c["embedding_dim"] = int(joined[n].X.shape[1])
        c["not_shared_with_other_methods"] = int(c["n_cases"] - len(common))
        c["source"] = str(embeddings[n]) if not isinstance(embeddings[n], tuple) else "<memory>"
        dataset["methods"][n] = c
        if c["labels_without_embedding"]:
            notes.append(f"{n}: {c['labels_without_embedding']} labelled case(s) have no embedding")
        if c["embeddings_without_labels"]:
            notes.append(
                f"{n}: {c['embeddings_without_labels']} embedded case(s) have no label row"
            )
        if c["not_shared_with_other_methods"]:
            notes.append(
                f"{n}: {c['not_shared_with_other_methods']} case(s) left out because another "
                "embeddings table lacks them (methods are compared on the same cases)"
            )
        if c.get("cases_with_several_slides_averaged"):
            notes.append(
                f"{n}: {c['cases_with_several_slides_averaged']} case(s) have several slides; "
                "their embeddings were averaged"
            )
    base = joined[names[0]].labels  # identical case order for every method

    # validate every task before the slow part: bad input fails fast and names the task
    targets = {}
    for t in task_list:
        targets[t.name] = (
            classification_target(base, t.name)
            if t.kind == CLASSIFICATION
            else survival_target(base, t.name)
        )

    steps = []
    skipped: list[dict] = []
    for t in task_list:
        wanted = [p for p in protocols if (p == "survival") == (t.kind == SURVIVAL)]
        if not wanted:
            skipped.append(
                {
                    "task": t.name,
                    "reason": f"{t.kind} task but no matching protocol among {protocols}",
                }
            )
        steps += [(t, p, n) for p in wanted for n in names]

    config = {
        "protocols": protocols,
        "tasks": [t.name for t in task_list],
        "folds": folds,
        "bootstrap": n_boot,
        "seed": seed,
        "bootstrap_seed": boot_seed,
        "fewshot": {"ks": list(ks), "draws": draws, "C": 1.0, "standard_scaler": fewshot_scale},
        "kfold": {"n_iter": n_iter, "inner_folds": inner_folds, "C_grid": "logspace(-3, 2, 50)"},
        "survival": {
            "n_components": cox_components or "auto (events/10, 1..10)",
            "alpha": cox_alpha,
        },
    }
    metrics: dict = {
        "format": "cscl-eval/1",
        "cscl_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "methods": names,
        "primary": names[0],
        "config": config,
        "dataset": dataset,
        "tasks": {},
        "skipped": skipped,
        "notes": notes,
    }
    for t in task_list:
        tgt = targets[t.name]
        entry: dict = {"type": t.kind, "n_cases": int(len(tgt.index))}
        entry["n_missing_labels"] = tgt.n_missing
        if t.kind == CLASSIFICATION:
            entry["classes"] = tgt.classes
            entry["class_counts"] = {c: int((tgt.y == c).sum()) for c in tgt.classes}
        else:
            entry["n_events"] = int(tgt.event.sum())
        if tgt.n_missing:
            notes.append(f"{t.name}: {tgt.n_missing} case(s) without a label dropped")
        entry["results"] = {n: {} for n in names}
        metrics["tasks"][t.name] = entry

    pred_frames: list[pd.DataFrame] = []
    boots: dict = {}  # (task, method, key) -> paired score arrays for the Wilcoxon tests
    bar = _progress(progress, len(steps))
    for t, proto, n in steps:
        if bar is not None:
            bar[0].update(bar[1], description=f"{t.name} · {proto} · {n}")
        tgt, X = targets[t.name], joined[n].X
        res = metrics["tasks"][t.name]["results"][n]
        ids = base["case_id"].to_numpy(str)[tgt.index]
        if proto == "fewshot":
            df = few_shot(X[tgt.index], tgt.y, ks=ks, draws=draws, seed=seed, scale=fewshot_scale)
            res["fewshot"] = _fewshot_rows(df)
            for row in res["fewshot"]:
                if row["status"] == "skipped":
                    skipped.append(
                        {
                            "task": t.name,
                            "method": n,
                            "protocol": f"fewshot k={row['k']}",
                            "reason": row["reason"],
                        }
                    )
                else:
                    boots[(t.name, n, f"fewshot_auc_k{row['k']}")] = np.asarray(row["auc_draws"])
        elif proto == "kfold":
            r = kfold_eval(
                X[tgt.index],
                tgt.y,
                ids,
                folds=folds,
                seed=seed,
                n_iter=n_iter,
                inner_folds=inner_folds,
                n_boot=n_boot,
                boot_seed=boot_seed,
                task=t.name,
            )
            res["kfold"] = {
                "metrics": r.metrics,
                "per_fold": r.per_fold,
                "roc": r.roc,
                "confusion": r.confusion,
                "notes": r.notes,
            }
            for m in ("auc", "f1_weighted", "balanced_accuracy"):
                boots[(t.name, n, f"kfold_{m}_bootstrap")] = r.boot[m]
                boots[(t.name, n, f"kfold_{m}_folds")] = np.array(
                    [f.get(m, np.nan) for f in r.per_fold]
                )
            p = r.predictions.assign(method=n, task=t.name, protocol="kfold")
            if r.roc:
                p["score"] = p[f"prob_{r.roc['positive_class']}"]
            pred_frames.append(p)
        else:
            s = survival_eval(
                X[tgt.index],
                tgt.time,
                tgt.event,
                ids,
                folds=folds,
                seed=seed,
                n_components=cox_components,
                alpha=cox_alpha,
                n_boot=n_boot,
                boot_seed=boot_seed,
                task=t.name,
            )
            res["survival"] = {
                "cindex": s.cindex,
                "per_fold": s.per_fold,
                "logrank": s.logrank,
                "n_components": s.n_components,
                "notes": s.notes,
            }
            boots[(t.name, n, "cindex_bootstrap")] = s.boot
            boots[(t.name, n, "cindex_folds")] = np.array(
                [f.get("cindex", np.nan) for f in s.per_fold]
            )
            p = s.predictions.assign(method=n, task=t.name, protocol="survival")
            pred_frames.append(p.assign(score=p["risk"]))
        if bar is not None:
            bar[0].advance(bar[1])
    if bar is not None:
        bar[0].stop()

    for t in task_list:
        comps = {}
        for other in names[1:]:
            c = {}
            for (task, n, key), a in boots.items():
                if task == t.name and n == names[0] and (task, other, key) in boots:
                    c[key] = wilcoxon_greater(a, boots[(task, other, key)])
            if c:
                comps[other] = c
        metrics["tasks"][t.name]["comparisons"] = comps

    if pred_frames:
        preds = pd.concat(pred_frames, ignore_index=True)
        lead = ["method", "task", "protocol", "case_id", "fold"]
        preds = preds[lead + [c for c in preds.columns if c not in lead]]
    else:
        preds = pd.DataFrame(columns=["method", "task", "protocol", "case_id", "fold"])
    from cscl.io.storage import atomic_path

    with atomic_path(out / "predictions.parquet") as tmp:
        preds.to_parquet(tmp, index=False)
    metrics = _jsonable(metrics)
    if write_report:
        _write_plots(metrics, preds, out)
        from cscl.eval.report import write_report as _write_html

        _write_html(metrics, out)
    _write_json(metrics, out / "metrics.json")
    return metrics


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import Progress

    prog = Progress(transient=False)
    prog.start()
    return prog, prog.add_task("evaluating", total=total)


def _write_json(metrics: dict, path: Path) -> None:
    import json

    from cscl.io.storage import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False))


def _write_plots(metrics: dict, preds: pd.DataFrame, out: Path) -> None:
    """PNG files beside report.html; their names are recorded under tasks[t]['plots']."""
    for task, entry in metrics["tasks"].items():
        figs: dict = {}
        res = entry["results"]
        if entry["type"] == CLASSIFICATION:
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
                pos = next(
                    r["kfold"]["roc"]["positive_class"] for r in res.values() if "kfold" in r
                )
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
        else:
            for n, r in res.items():
                sv = r.get("survival")
                if not sv:
                    continue
                p = preds[(preds["task"] == task) & (preds["method"] == n)]
                name = f"{_slug(task, n)}_km.png"
                plots.km_png(
                    p["time"].to_numpy(float),
                    p["event"].to_numpy(int),
                    p["risk_group"].to_numpy(str),
                    out / name,
                    f"{task} — {n}: risk groups (median split of out-of-fold risk)",
                    sv["logrank"]["p_value"],
                )
                figs.setdefault("km", {})[n] = name
        entry["plots"] = figs


def flat_metrics(metrics: dict) -> dict[str, float]:
    """Flat name → float for a KFP `Metrics` artifact (`log_metric(name, value)`).

    Names: `<task>.<method>.<metric>`, plus `<task>.<method>_vs_<baseline>.<test>_p`.
    """
    flat: dict[str, float] = {}

    def put(key: str, v) -> None:
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            flat[key] = float(v)

    for task, entry in metrics.get("tasks", {}).items():
        for n, r in entry.get("results", {}).items():
            pre = f"{task}.{n}"
            for m, v in (r.get("kfold") or {}).get("metrics", {}).items():
                put(f"{pre}.kfold_{m}", v["value"])
                put(f"{pre}.kfold_{m}_ci_low", v["ci_low"])
                put(f"{pre}.kfold_{m}_ci_high", v["ci_high"])
            for row in r.get("fewshot", []):
                if row.get("status") == "ok":
                    put(f"{pre}.fewshot_k{row['k']}_auc", row["auc_mean"])
                    put(
                        f"{pre}.fewshot_k{row['k']}_balanced_accuracy",
                        row["balanced_accuracy_mean"],
                    )
            sv = r.get("survival")
            if sv:
                put(f"{pre}.cindex", sv["cindex"]["value"])
                put(f"{pre}.cindex_ci_low", sv["cindex"]["ci_low"])
                put(f"{pre}.cindex_ci_high", sv["cindex"]["ci_high"])
                put(f"{pre}.logrank_p", sv["logrank"]["p_value"])
        primary = metrics.get("primary")
        for other, tests in entry.get("comparisons", {}).items():
            for key, res in tests.items():
                put(f"{task}.{primary}_vs_{other}.{key}_p", res.get("p_value"))
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
