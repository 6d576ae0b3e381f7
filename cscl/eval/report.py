"""report.html: what a person reads after `cscl evaluate`. One self-contained file (the PNGs are
embedded as base64 and also written beside it), built from the metrics dict alone."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from cscl.eval.triage_report import triage_section
from cscl.io.storage import atomic_path

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{max-width:520px;border:1px solid #ddd}
.note{color:#555;font-size:.9em}.skip{color:#a40}.best{font-weight:bold}
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


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


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
        _table(
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
    parts.append(_table(["task", "type", "cases", "classes / events", "missing labels"], rows))
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
        parts.append(_table(["embeddings", *_METRIC_NAMES.values(), "C chosen"], kf_rows))
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
            _table(["embeddings", "k", "AUC", "Balanced acc.", "train / test"], fs_rows)
            + _img(out_dir, e.get("plots", {}).get("fewshot"), f"{task} few-shot")
        )
    return "".join(parts)


def _survival(task: str, e: dict, out_dir: Path) -> str:
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
                "–" if lr.get("p_value") is None else f"{lr['p_value']:.3g}",
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
        + _table(head, rows)
        + f"<div class=figs>{''.join(figs)}</div>"
    )


def _comparisons(e: dict, primary: str) -> str:
    rows = []
    for other, tests in e.get("comparisons", {}).items():
        for key, t in tests.items():
            p = t.get("p_value")
            rows.append(
                [
                    f"{escape(primary)} &gt; {escape(other)}",
                    escape(key),
                    str(t["n_pairs"]),
                    _f(t.get("mean_difference"), 4),
                    "–" if p is None else f"{p:.3g}",
                ]
            )
    if not rows:
        return ""
    caveat = (
        "<p class=note>Scores are paired (same folds, draws and bootstrap resamples for every "
        "embeddings table). Bootstrap-paired p-values treat the resamples as independent and are "
        "optimistic; per-fold tests are conservative (5 folds: smallest possible p = 0.031).</p>"
    )
    return (
        "<h3>Comparison (one-sided Wilcoxon signed-rank)</h3>"
        + caveat
        + _table(["hypothesis", "paired scores", "pairs", "mean difference", "p"], rows)
    )


def render_html(metrics: dict, out_dir: Path) -> str:
    """The report as a string; PNGs named in metrics are read from `out_dir` and embedded."""
    out_dir = Path(out_dir)
    methods = metrics["methods"]
    sub = f"method: <b>{escape(methods[0])}</b>"
    if len(methods) > 1:
        sub += "; compared with: " + ", ".join(escape(m) for m in methods[1:])
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>cscl evaluation — {escape(methods[0])}</title><style>{_CSS}</style></head><body>",
        "<h1>Slide-embedding evaluation</h1>",
        f"<p>{sub}<br><span class=note>cscl {escape(metrics['cscl_version'])}, "
        f"{escape(metrics['created'])}; protocols: {', '.join(metrics['config']['protocols'])}; "
        f"{metrics['config']['folds']} folds, {metrics['config']['bootstrap']} bootstrap "
        f"resamples, seed {metrics['config']['seed']}</span></p>",
        "<h2>Dataset</h2>",
        _dataset(metrics),
    ]
    for task, e in metrics["tasks"].items():
        parts.append(f"<h2>Task: {escape(task)} <span class=note>({e['type']})</span></h2>")
        if e["type"] == "classification":
            parts.append(_classification(task, e, out_dir))
        else:
            parts.append(_survival(task, e, out_dir))
        parts.append(_comparisons(e, methods[0]))
    parts.append(triage_section(metrics))
    items = [f"<li>{escape(n)}</li>" for n in metrics.get("notes", [])]
    for s in metrics.get("skipped", []):
        where = " · ".join(str(s[k]) for k in ("task", "method", "protocol") if s.get(k))
        items.append(f"<li class=skip>skipped {escape(where)}: {escape(s['reason'])}</li>")
    for task, e in metrics["tasks"].items():
        for n, r in e["results"].items():
            for proto in ("kfold", "survival"):
                for note in (r.get(proto) or {}).get("notes", []):
                    items.append(f"<li>{escape(task)} · {escape(n)} · {proto}: {escape(note)}</li>")
    parts.append("<h2>Notes and skipped items</h2><ul>" + ("".join(items) or "<li>none</li>"))
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def write_report(metrics: dict, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(render_html(metrics, out_dir), encoding="utf-8")
    return path
