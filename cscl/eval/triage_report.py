"""The IHC triage report as people read it: a section of report.html, and triage.html + triage.json
beside it (the evaluate component shows triage.html as its own HTML artifact in the Kubeflow UI).

Built from metrics.json alone (`tasks[t].results[method].kfold.triage`, cscl.eval.triage); the
reliability curves are inline SVG, so triage.html is one self-contained file without matplotlib.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from cscl.eval.html_parts import html_table
from cscl.io.storage import atomic_path

TRIAGE_FORMAT = "cscl-triage/1"
TRIAGE_JSON = "triage.json"
TRIAGE_HTML = "triage.html"
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9em}.skip{color:#a40}
"""
_ABOUT = (
    "Pre-screening: an H&amp;E-based probability that the IHC stain is positive; cases below a "
    "threshold would not be stained. Probabilities are the k-fold probe's pooled out-of-fold "
    "predictions, calibrated by Platt scaling cross-fitted on the outer folds (the balanced class "
    "weights of the probe distort raw probabilities). The threshold of each target sensitivity is "
    "the largest one that keeps at least that share of positives above it; 95 % CIs are "
    "percentile bootstraps of the cases with the threshold chosen again in every resample."
)


def triage_results(metrics: dict) -> dict[str, dict[str, dict]]:
    """{task: {method: triage section}} of every task and embeddings table that has one."""
    out: dict[str, dict[str, dict]] = {}
    for task, entry in metrics.get("tasks", {}).items():
        for method, res in entry.get("results", {}).items():
            tr = (res.get("kfold") or {}).get("triage")
            if tr:
                out.setdefault(task, {})[method] = tr
    return out


def triage_skips(metrics: dict) -> list[dict]:
    return [s for s in metrics.get("skipped", []) if s.get("protocol") == "kfold triage"]


def triage_document(metrics: dict) -> dict:
    """triage.json: the triage sections by task and method, the skips, and the settings."""
    return {
        "format": TRIAGE_FORMAT,
        "cscl_version": metrics.get("cscl_version"),
        "created": metrics.get("created"),
        "primary": metrics.get("primary"),
        "methods": metrics.get("methods", []),
        "config": metrics.get("config", {}).get("triage"),
        "tasks": triage_results(metrics),
        "skipped": triage_skips(metrics),
    }


def _ci(m: dict, pct: bool = True, nd: int = 0) -> str:
    def f(v):
        if v is None:
            return "–"
        return f"{100 * v:.{nd}f} %" if pct else f"{v:.{nd}f}"

    if m.get("ci_low") is None:
        return f(m.get("value"))
    return f"{f(m['value'])} <span class=note>[{f(m['ci_low'])}–{f(m['ci_high'])}]</span>"


def reliability_svg(curves: dict[str, dict], title: str, size: int = 300) -> str:
    """Reliability diagram (observed fraction of positives against mean predicted probability,
    one point per bin, area ∝ cases) as inline SVG: curves[label] = {"reliability": {...},
    "dashed": bool}."""
    pad, top = 44, 26
    w = size - pad - 10

    def xy(px: float, py: float) -> tuple[float, float]:
        return pad + px * w, top + (1 - py) * w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 170}" height="{size + 20}" '
        f'role="img"><title>{escape(title)}</title>',
        f'<text x="{pad}" y="16" font-size="12">{escape(title)}</text>',
        f'<rect x="{pad}" y="{top}" width="{w}" height="{w}" fill="none" stroke="#999"/>',
        f'<line x1="{xy(0, 0)[0]}" y1="{xy(0, 0)[1]}" x2="{xy(1, 1)[0]}" y2="{xy(1, 1)[1]}" '
        'stroke="#bbb" stroke-dasharray="4 3"/>',
    ]
    for v in (0.0, 0.5, 1.0):
        x, y = xy(v, v)
        parts.append(
            f'<text x="{x}" y="{top + w + 14}" font-size="10" text-anchor="middle">{v:g}</text>'
        )
        parts.append(
            f'<text x="{pad - 6}" y="{y + 3}" font-size="10" text-anchor="end">{v:g}</text>'
        )
    parts.append(
        f'<text x="{pad + w / 2}" y="{top + w + 28}" font-size="11" text-anchor="middle">'
        "mean predicted probability</text>"
        f'<text x="12" y="{top + w / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + w / 2})">observed fraction positive</text>'
    )
    for i, (label, c) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)]
        rel = c["reliability"]
        pts = [
            xy(px, py)
            for px, py in zip(rel["mean_predicted"], rel["observed_fraction"], strict=True)
        ]
        dash = ' stroke-dasharray="5 3"' if c.get("dashed") else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"{dash}/>'
        )
        total = max(sum(rel["n"]), 1)
        for (x, y), n in zip(pts, rel["n"], strict=True):
            r = 2.0 + 9.0 * (n / total) ** 0.5
            fill = "white" if c.get("dashed") else color
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{fill}" stroke="{color}">'
                f"<title>{escape(label)}: {n} cases</title></circle>"
            )
        ly = top + 8 + 16 * i
        parts.append(
            f'<line x1="{size}" y1="{ly}" x2="{size + 18}" y2="{ly}" stroke="{color}" '
            f'stroke-width="2"{dash}/><text x="{size + 22}" y="{ly + 4}" font-size="10">'
            f"{escape(label)} (ECE {rel['ece']:.3f})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _task_html(task: str, by_method: dict[str, dict], primary: str | None) -> str:
    first = by_method.get(primary) or next(iter(by_method.values()))
    marker = first["marker"]
    head = (
        f"<h3>{escape(marker)} <span class=note>({escape(task)}; positive = "
        f"{escape(first['positive_class'])}; {first['n_positive']} positive, "
        f"{first['n_negative']} other cases)</span></h3>"
    )
    lead = primary if primary in by_method else next(iter(by_method))
    words = "".join(
        f"<li>{escape(r['sentence'])}</li>" for r in by_method[lead]["operating_points"]
    )
    parts = [head, f"<p>{escape(lead)}:</p><ul>{words}</ul>"]
    rows = []
    for method, tr in by_method.items():
        for r in tr["operating_points"]:
            rows.append(
                [
                    escape(method),
                    f"{100 * r['target_sensitivity']:.0f} %",
                    _ci(r["threshold"], pct=False, nd=3),
                    _ci(r["skip_fraction"]),
                    _ci(r["npv"], nd=1),
                    f"{_ci(r['missed_positives'], pct=False)} of {tr['n_positive']}",
                    "–" if r["specificity"] is None else f"{100 * r['specificity']:.0f} %",
                ]
            )
    parts.append(
        html_table(
            [
                "embeddings",
                "target sensitivity",
                "threshold (calibrated p)",
                "IHC stains skipped",
                "NPV of skipping",
                "positives missed",
                "negatives spared",
            ],
            rows,
        )  # fmt: skip
    )
    rows, curves = [], {}
    for method, tr in by_method.items():
        cal = tr["calibration"]
        rows.append(
            [
                escape(method),
                _ci(cal["brier"], pct=False, nd=3),
                f"{cal['brier_uncalibrated']:.3f}",
                f"{cal['brier_prevalence_only']:.3f}",
                f"{cal['reliability']['ece']:.3f}",
                f"{cal['reliability_uncalibrated']['ece']:.3f}",
            ]
        )
        curves[f"{method} calibrated"] = {"reliability": cal["reliability"]}
    curves[f"{lead} uncalibrated"] = {
        "reliability": by_method[lead]["calibration"]["reliability_uncalibrated"],
        "dashed": True,
    }
    parts.append(
        html_table(
            [
                "embeddings",
                "Brier (calibrated) [95 % CI]",
                "Brier (uncalibrated)",
                "Brier (prevalence only)",
                "ECE (calibrated)",
                "ECE (uncalibrated)",
            ],
            rows,
        )  # fmt: skip
    )
    parts.append(reliability_svg(curves, f"{marker}: reliability of P({first['positive_class']})"))
    notes = {n for tr in by_method.values() for n in tr.get("notes", [])}
    parts += [f"<p class=note>{escape(n)}</p>" for n in sorted(notes)]
    return "".join(parts)


def triage_section(metrics: dict, heading: str = "h2") -> str:
    """The "IHC triage" section of report.html ("" when the evaluation has no IHC-status task)."""
    results, skips = triage_results(metrics), triage_skips(metrics)
    if not results and not skips:
        return ""
    parts = [f"<{heading}>IHC triage</{heading}>", f"<p class=note>{_ABOUT}</p>"]
    primary = metrics.get("primary")
    for task, by_method in results.items():
        parts.append(_task_html(task, by_method, primary))
    for s in skips:
        where = " · ".join(str(s[k]) for k in ("task", "method") if s.get(k))
        parts.append(f"<p class=skip>no triage for {escape(where)}: {escape(s['reason'])}</p>")
    return "\n".join(parts)


def render_triage_html(metrics: dict) -> str:
    """triage.html: the section as one page (a page saying why when there is nothing to show)."""
    body = triage_section(metrics, heading="h1") or (
        "<h1>IHC triage</h1><p>No IHC triage in this evaluation: it needs a binary "
        "<code>&lt;marker&gt;_status</code> task (er_status, pgr_status, her2_status, "
        "ki67_status) evaluated with the kfold protocol.</p>"
    )
    title = f"IHC triage — {escape(str(metrics.get('primary', '')))}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


def write_triage(metrics: dict, out_dir: str | Path, html: bool = True) -> dict[str, Path]:
    """triage.json (and triage.html) under `out_dir` when the evaluation has a triage section
    or a triage skip; returns the paths written."""
    doc = triage_document(metrics)
    if not doc["tasks"] and not doc["skipped"]:
        return {}
    out = Path(out_dir)
    written = {"json": out / TRIAGE_JSON}
    with atomic_path(written["json"]) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    if html:
        written["html"] = out / TRIAGE_HTML
        with atomic_path(written["html"]) as tmp:
            tmp.write_text(render_triage_html(metrics), encoding="utf-8")
    return written
