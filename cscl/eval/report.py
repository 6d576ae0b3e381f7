"""report.html: what a person reads after `cscl evaluate`. One self-contained file (the PNGs are
embedded as base64 and also written beside it), built from the metrics dict and the
`ReportOptions` (score metric, quality gate, survival time unit).

Order: the headline first (what was evaluated, each method's quality score, the gate verdict,
warnings), then the per-task table with the best method marked, then the details (dataset,
each task's protocols and figures, the paired tests, notes). One function per section;
`render_html` lists them. p-values follow `cscl.eval.pvalues` (no number on too few cases,
never below their resolution)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from cscl.eval.headline import (
    ReportOptions,
    gate_verdict,
    quality_scores,
    task_rows,
)
from cscl.eval.html_parts import html_table
from cscl.eval.metrics import task_headlines
from cscl.eval.pvalues import (
    MIN_CASES_FOR_P,
    format_p,
    resolution,
    smallest_exact_p,
    too_few_cases,
)
from cscl.eval.triage_report import triage_section
from cscl.io.storage import atomic_path

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{max-width:520px;border:1px solid #ddd}
.note{color:#555;font-size:.9em}.skip{color:#a40}.best{font-weight:bold;background:#e6f4e6}
.headline{background:#f7f7f7;border:1px solid #ccc;padding:.4em 1.2em;margin:1em 0}
.lead{font-size:1.15em}.verdict{font-size:1.2em;font-weight:bold;padding:.3em .6em}
.pass{color:#175e17;background:#e6f4e6}.fail{color:#8b1111;background:#fbe7e7}
.warn{color:#8b4a00}table.atrisk{font-size:.85em;margin:.2em 0 1em}
"""

_METRIC_NAMES = {
    "auc": "AUC",
    "balanced_accuracy": "Balanced acc.",
    "f1_weighted": "Weighted F1",
    "precision_macro": "Macro precision",
    "recall_macro": "Macro recall",
}


def _f(v, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _ci(m: dict) -> str:
    if m.get("ci_low") is None:
        return _f(m.get("value"))
    return f"{_f(m['value'])} <span class=note>[{_f(m['ci_low'])}–{_f(m['ci_high'])}]</span>"


def _img(out_dir: Path, name: str | None, alt: str) -> str:
    if not name or not (out_dir / name).exists():
        return ""
    data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}" title="{escape(name)}">'


def _dataset(metrics: dict) -> str:
    ds = metrics["dataset"]
    parts = [
        f"<p>Labels: <code>{escape(str(ds['labels']))}</code> ({ds['n_label_rows']} rows). "
        f"Cases evaluated (labelled and embedded by every method): <b>{ds['n_cases']}</b>.</p>"
    ]
    rows = []
    for n, c in ds["methods"].items():
        rows.append(
            [
                escape(n),
                escape(str(c.get("source", ""))),
                str(c.get("embedding_dim")),
                str(c.get("n_embedding_rows")),
                str(c.get("labels_without_embedding")),
                str(c.get("embeddings_without_labels")),
                str(c.get("cases_with_several_slides_averaged", 0)),
            ]
        )
    parts.append(
        html_table(
            [
                "embeddings",
                "source",
                "dim",
                "rows",
                "labelled cases without embedding",
                "embedded cases without labels",
                "cases with several slides (averaged)",
            ],
            rows,
        )
    )
    rows = []
    for task, e in metrics["tasks"].items():
        if e["type"] == "classification":
            what = ", ".join(f"{escape(k)}: {v}" for k, v in e["class_counts"].items())
        else:
            what = f"{e['n_events']} events, {e['n_cases'] - e['n_events']} censored"
        rows.append([escape(task), e["type"], str(e["n_cases"]), what, str(e["n_missing_labels"])])
    parts.append(html_table(["task", "type", "cases", "classes / events", "missing labels"], rows))
    return "".join(parts)


def _classification(task: str, e: dict, out_dir: Path) -> str:
    parts = []
    kf_rows = []
    for n, r in e["results"].items():
        kf = r.get("kfold")
        if kf:
            cs = sorted({f["C"] for f in kf["per_fold"]})
            c_txt = ", ".join(f"{c:.3g}" for c in cs)
            kf_rows.append([escape(n)] + [_ci(kf["metrics"][m]) for m in _METRIC_NAMES] + [c_txt])
    if kf_rows:
        cfg_line = (
            "Pooled out-of-fold predictions, StandardScaler + balanced logistic regression, "
            "C by randomized search; 95 % CI = percentile bootstrap of the pooled predictions."
        )
        parts.append(f"<h3>k-fold</h3><p class=note>{cfg_line}</p>")
        parts.append(html_table(["embeddings", *_METRIC_NAMES.values(), "C chosen"], kf_rows))
        figs = [_img(out_dir, e.get("plots", {}).get("roc"), f"{task} ROC")]
        for n, name in e.get("plots", {}).get("confusion", {}).items():
            figs.append(_img(out_dir, name, f"{task} confusion {n}"))
        parts.append(f"<div class=figs>{''.join(figs)}</div>")
    fs_rows = []
    for n, r in e["results"].items():
        for row in r.get("fewshot", []):
            if row["status"] == "ok":
                fs_rows.append(
                    [
                        escape(n),
                        str(row["k"]),
                        f"{_f(row['auc_mean'])} ± {_f(row['auc_std'])}",
                        f"{_f(row['balanced_accuracy_mean'])} ± {_f(row['balanced_accuracy_std'])}",
                        f"{row['n_train']} / {row['n_test']}",
                    ]
                )
            else:
                msg = f"<span class=skip>skipped: {escape(row['reason'])}</span>"
                fs_rows.append([escape(n), str(row["k"]), msg, "", ""])
    if fs_rows:
        parts.append(
            "<h3>Few-shot</h3><p class=note>Logistic regression (C=1) on k cases per class, "
            "tested on all remaining cases; mean ± std over the draws.</p>"
        )
        parts.append(
            html_table(["embeddings", "k", "AUC", "Balanced acc.", "train / test"], fs_rows)
            + _img(out_dir, e.get("plots", {}).get("fewshot"), f"{task} few-shot")
        )
    return "".join(parts)


def _at_risk(task: str, e: dict, time_unit: str | None) -> str:
    """The numbers at risk under each Kaplan–Meier figure, as a table a reader can copy."""
    parts = []
    unit = f" ({escape(time_unit)})" if time_unit else f" (<code>{escape(task)}_time</code>)"
    for n, table in e.get("plots", {}).get("km_at_risk", {}).items():
        head = [f"{escape(n)}: number at risk at time{unit}"] + [f"{t:g}" for t in table["times"]]
        rows = [[f"{escape(g)} risk", *map(str, c)] for g, c in table["at_risk"].items()]
        parts.append(html_table(head, rows).replace("<table>", "<table class=atrisk>", 1))
    return "".join(parts)


def _survival(task: str, e: dict, out_dir: Path, time_unit: str | None = None) -> str:
    rows = []
    for n, r in e["results"].items():
        sv = r.get("survival")
        if not sv:
            continue
        folds = [f["cindex"] for f in sv["per_fold"] if f.get("cindex") is not None]
        lr = sv["logrank"]
        rows.append(
            [
                escape(n),
                _ci(sv["cindex"]),
                _f(sum(folds) / len(folds)) if folds else "–",
                escape(format_p(lr.get("p_value"), n_cases=e["n_cases"])),
                ", ".join(f"{k}: {v}" for k, v in lr.get("groups", {}).items()),
                str(sv["n_components"]),
            ]
        )
    if not rows:
        return ""
    head = [
        "embeddings",
        "C-index (pooled) [95 % CI]",
        "mean per-fold C",
        "log-rank p",
        "risk groups",
        "PCA comps",
    ]
    figs = [_img(out_dir, name, f"{task} KM {n}") for n, name in e["plots"].get("km", {}).items()]
    return (
        "<h3>Survival</h3><p class=note>Cox model (StandardScaler → PCA → ridge Cox) on case "
        "folds; Harrell's C-index of the out-of-fold risk; risk groups split at its median.</p>"
        + html_table(head, rows)
        + f"<div class=figs>{''.join(figs)}</div>"
        + _at_risk(task, e, time_unit)
    )


def _p_cell(key: str, test: dict, n_cases: int) -> str:
    """A paired test's p as shown: bootstrap-paired p no finer than 1/resamples."""
    floor = resolution(test.get("n_pairs")) if key.endswith("_bootstrap") else resolution(None)
    return escape(format_p(test.get("p_value"), n_cases=n_cases, floor=floor))


def _smallest_p(key: str, n_pairs: int) -> str:
    """What the test can show at best: 1/2^n for an exact test on folds or draws, the
    resolution 1/n for a bootstrap-paired one."""
    if key.endswith("_bootstrap"):
        return f"resolution 1/{n_pairs}" if n_pairs else "–"
    return f"{smallest_exact_p(n_pairs):.3g}"


def _comparison_caveat(metrics: dict) -> str:
    cfg = metrics["config"]
    folds, n_boot = cfg["folds"], cfg["bootstrap"]
    draws = cfg.get("fewshot", {}).get("draws")
    parts = [
        "Scores are paired (same folds, draws and bootstrap resamples for every embeddings "
        f"table). Per-fold tests pair {folds} folds, so their smallest possible p is "
        f"1/2^{folds} = {smallest_exact_p(folds):.3g}"
    ]
    if draws and "fewshot" in cfg.get("protocols", []):
        parts.append(
            f"few-shot tests pair {draws} draws (smallest possible p = "
            f"{smallest_exact_p(draws):.3g})"
        )
    parts.append(
        f"bootstrap-paired tests pair {n_boot} resamples as if they were independent cases, "
        f"so their p-values are optimistic and shown no finer than 1/{n_boot} "
        f"(= {resolution(n_boot):.3g})"
    )
    text = "; ".join(parts) + "."
    if too_few_cases(metrics["dataset"]["n_cases"]):
        text += (
            f" With fewer than {MIN_CASES_FOR_P} cases no p-value is interpretable; "
            "they are not shown."
        )
    return f"<p class=note>{escape(text)}</p>"


def _comparisons(metrics: dict, task: str) -> str:
    """The paired one-sided tests of the primary against each other method on `task`."""
    e, primary = metrics["tasks"][task], metrics["primary"]
    rows = []
    for other, tests in e.get("comparisons", {}).items():
        for key, t in tests.items():
            rows.append(
                [
                    f"{escape(primary)} &gt; {escape(other)}",
                    escape(key),
                    str(t["n_pairs"]),
                    _smallest_p(key, t["n_pairs"]),
                    _f(t.get("mean_difference"), 4),
                    _p_cell(key, t, e["n_cases"]),
                ]
            )
    if not rows:
        return ""
    head = ["hypothesis", "paired scores", "pairs", "smallest possible p", "mean difference", "p"]
    return (
        "<h3>Comparison (one-sided Wilcoxon signed-rank)</h3>"
        + _comparison_caveat(metrics)
        + html_table(head, rows)
    )


def _metric_name(metric: str) -> str:
    """`kfold_auc` → `AUC (k-fold)`, `cindex` → `C-index`, `fewshot_k5_auc` → `AUC (few-shot, k=5)`."""
    if metric == "cindex":
        return "C-index"
    if metric.startswith("kfold_"):
        base = metric[len("kfold_") :]
        return f"{_METRIC_NAMES.get(base, base)} (k-fold)"
    if metric.startswith("fewshot_k"):
        k, _, base = metric[len("fewshot_k") :].partition("_")
        return f"{_METRIC_NAMES.get(base, base)} (few-shot, k={k})"
    return metric


def _what_was_evaluated(metrics: dict) -> str:
    methods = metrics["methods"]
    against = ""
    if len(methods) > 1:
        against = " against " + ", ".join(f"<b>{escape(m)}</b>" for m in methods[1:])
    tasks = []
    for task, e in metrics["tasks"].items():
        if e["type"] == "classification":
            tasks.append(f"{escape(task)} ({len(e.get('classes', []))} classes)")
        else:
            tasks.append(f"{escape(task)} (survival, {e['n_events']} events)")
    n = metrics["dataset"]["n_cases"]
    return (
        f"<p class=lead>Evaluated <b>{escape(methods[0])}</b>{against} on <b>{n} cases</b> and "
        f"{len(tasks)} task(s): {', '.join(tasks)}.</p>"
    )


def _gate(metrics: dict, options: ReportOptions) -> str:
    if options.gate is None:
        return (
            "<p class=note>No quality gate was given for this evaluation "
            "(a pipeline passes its threshold to show the verdict here).</p>"
        )
    v = gate_verdict(metrics, options.gate, options.score_metric)
    word, cls = ("PASSED", "pass") if v.passed else ("FAILED", "fail")
    why = "; ".join(escape(r) for r in v.reasons) or "no rule set"
    return f"<p class='verdict {cls}'>Quality gate {word}: {why}.</p>"


def _scores(metrics: dict, options: ReportOptions) -> str:
    rows = []
    for q in quality_scores(metrics, options.score_metric):
        value = f"<b>{q.value:.3f}</b>" if q.defined else "no score"
        missing = ", ".join(escape(t) for t in q.tasks_without_value) or "–"
        rows.append([escape(q.method), value, str(len(q.counted)), missing])
    name = _metric_name(options.score_metric)
    return (
        f"<p>Quality score = mean {escape(name)} over the tasks that have one "
        f"(<code>{escape(options.score_metric)}</code>; the number the pipelines' gate uses).</p>"
        + html_table(["method", "quality score", "tasks counted", "tasks without a value"], rows)
    )


def _warnings(metrics: dict, options: ReportOptions) -> str:
    items = []
    n = metrics["dataset"]["n_cases"]
    if too_few_cases(n):
        items.append(
            f"Only {n} cases: estimates are unstable and p-values are not interpretable "
            f"(fewer than {MIN_CASES_FOR_P} cases); they are not shown as numbers."
        )
    else:
        for task, e in metrics["tasks"].items():
            if too_few_cases(e["n_cases"]):
                items.append(f"{task}: {e['n_cases']} cases; its p-values are not interpretable.")
    for row in task_headlines(metrics, metrics["primary"], options.score_metric):
        if row.at_or_below_chance:
            items.append(
                f"{metrics['primary']} is at or below chance on {row.task} "
                f"({_metric_name(row.metric)} {row.value:.3f} ≤ {row.chance:.2f})."
            )
    skipped = len(metrics.get("skipped", []))
    if skipped:
        items.append(f"{skipped} task/protocol combination(s) skipped: see Notes at the end.")
    if not items:
        return ""
    return "<ul class=warn>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"


def _headline(metrics: dict, options: ReportOptions) -> str:
    """What was evaluated, the quality scores, the gate verdict and the warnings."""
    return (
        "<div class=headline>"
        + _what_was_evaluated(metrics)
        + _gate(metrics, options)
        + _scores(metrics, options)
        + _warnings(metrics, options)
        + "</div>"
    )


def _headline_p(metrics: dict, task: str, metric: str) -> str:
    """p of the primary > first other method on `metric` (bootstrap-paired, else per-fold)."""
    methods = metrics["methods"]
    if len(methods) < 2:
        return "–"
    e = metrics["tasks"][task]
    tests = e.get("comparisons", {}).get(methods[1], {})
    for key in (f"{metric}_bootstrap", f"{metric}_folds"):
        if key in tests:
            return _p_cell(key, tests[key], e["n_cases"])
    return "–"


def _task_table(metrics: dict, options: ReportOptions) -> str:
    """Per task: the primary metric of every method [95 % CI], the best one highlighted."""
    methods = metrics["methods"]
    rows = []
    for r in task_rows(metrics, options.score_metric):
        cells = [escape(r.task), str(r.n_cases), _metric_name(r.metric)]
        best = r.best
        for m in methods:
            v, lo, hi = r.values[m]
            text = _ci({"value": v, "ci_low": lo, "ci_high": hi})
            cells.append(f"<span class=best>{text}</span>" if m in best else text)
        if len(methods) > 1:
            cells.append(_headline_p(metrics, r.task, r.metric))
        rows.append(cells)
    head = ["task", "cases", "metric", *(escape(m) for m in methods)]
    if len(methods) > 1:
        head.append(f"p ({escape(methods[0])} &gt; {escape(methods[1])})")
    return (
        "<h2>Results per task</h2><p class=note>Primary metric of each task with its 95 % "
        "bootstrap CI; the best method per task is highlighted. Details follow below.</p>"
        + html_table(head, rows)
    )


def _title(metrics: dict) -> str:
    methods = metrics["methods"]
    cfg = metrics["config"]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>cscl evaluation — {escape(methods[0])}</title><style>{_CSS}</style></head><body>"
        f"<h1>Slide-embedding evaluation: {escape(methods[0])}</h1>"
        f"<p class=note>cscl {escape(metrics['cscl_version'])}, {escape(metrics['created'])}; "
        f"protocols: {', '.join(cfg['protocols'])}; {cfg['folds']} folds, {cfg['bootstrap']} "
        f"bootstrap resamples, seed {cfg['seed']}</p>"
    )


def _task_details(metrics: dict, out_dir: Path, options: ReportOptions) -> str:
    parts = []
    for task, e in metrics["tasks"].items():
        parts.append(f"<h2>Task: {escape(task)} <span class=note>({e['type']})</span></h2>")
        if e["type"] == "classification":
            parts.append(_classification(task, e, out_dir))
        else:
            parts.append(_survival(task, e, out_dir, options.time_unit))
        parts.append(_comparisons(metrics, task))
    return "".join(parts)


def _notes(metrics: dict) -> str:
    items = [f"<li>{escape(n)}</li>" for n in metrics.get("notes", [])]
    for s in metrics.get("skipped", []):
        where = " · ".join(str(s[k]) for k in ("task", "method", "protocol") if s.get(k))
        items.append(f"<li class=skip>skipped {escape(where)}: {escape(s['reason'])}</li>")
    for task, e in metrics["tasks"].items():
        for n, r in e["results"].items():
            for proto in ("kfold", "survival"):
                for note in (r.get(proto) or {}).get("notes", []):
                    items.append(f"<li>{escape(task)} · {escape(n)} · {proto}: {escape(note)}</li>")
    return "<h2>Notes and skipped items</h2><ul>" + ("".join(items) or "<li>none</li>") + "</ul>"


def render_html(metrics: dict, out_dir: Path, options: ReportOptions | None = None) -> str:
    """The report as a string; PNGs named in metrics are read from `out_dir` and embedded."""
    out_dir, options = Path(out_dir), options or ReportOptions()
    sections = [
        _title(metrics),
        _headline(metrics, options),
        _task_table(metrics, options),
        "<h2>Dataset</h2>" + _dataset(metrics),
        _task_details(metrics, out_dir, options),
        triage_section(metrics),
        _notes(metrics),
        "</body></html>",
    ]
    return "\n".join(sections)


def write_report(metrics: dict, out_dir: Path, options: ReportOptions | None = None) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(render_html(metrics, out_dir, options), encoding="utf-8")
    return path
