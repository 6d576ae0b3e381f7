"""The Evidently 0.7 report of a drift plan: `drift.html`, every signal side by side, under OUR
verdict.

The page opens with the verdict of the policy (`verdict_headline_html`: drift or not, the signals
that drove it, each signal's value against its threshold, the drifted columns) because Evidently's
own headline ("Data drift not detected" / "detected") counts its per-column tests at its own
thresholds and can disagree with the policy; a reader of the Kubeflow UI must see ours first.

The numbers are the library's (`cscl.monitoring.drift`); this module only shows them with
Evidently's pictures. The report runs the same tests on the same columns of the same plan
(`EmbeddingsDrift` with the domain-classifier method on the pooled-PCA columns, `ValueDrift` per
QC, prediction and label column), so its values equal drift.json's; a test checks that.

Speed: Evidently draws the embedding picture with a t-SNE of up to 2,500 + 2,500 rows (minutes on
2 cores, and slower still when OpenMP oversubscribes a shared machine). While our report renders,
the picture uses a 2-D PCA projection instead (`_pca_picture`); the drift score is not affected.
BLAS/OpenMP threads are capped at the CPUs this process may use.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.metrics.data_drift import embeddings_drift
from evidently.legacy.metrics.data_drift.embedding_drift_methods import model
from evidently.metrics import EmbeddingsDrift, ValueDrift
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from cscl.monitoring.drift import EMB, DriftPlan, embedding_planned


class _PCA2D:
    """Stand-in for sklearn's TSNE in Evidently's embedding picture: a seeded 2-D PCA."""

    def __init__(self, n_components: int = 2, **_: Any):
        self.n_components = n_components

    def fit_transform(self, X: Any) -> np.ndarray:
        return PCA(n_components=self.n_components, random_state=0).fit_transform(np.asarray(X))


@contextlib.contextmanager
def _pca_picture():
    """Swap the t-SNE of Evidently's EmbeddingsDrift picture for PCA; cap native threads."""
    saved = embeddings_drift.TSNE
    embeddings_drift.TSNE = _PCA2D
    try:
        with threadpool_limits(limits=max(1, min(2, len(os.sched_getaffinity(0))))):
            yield
    finally:
        embeddings_drift.TSNE = saved


def render_report(plan: DriftPlan) -> Any:
    """Run the plan's tests as one Evidently Report; returns its snapshot (`save_html`)."""
    metrics: list[Any] = []
    if embedding_planned(plan):
        # bootstrap off: the threshold is ours (null AUC); projection done in the plan
        metrics.append(EmbeddingsDrift(embeddings_name=EMB, drift_method=model(bootstrap=False)))
    metrics += [ValueDrift(column=c, method=m, threshold=t) for _, c, m, t, _ in plan.columns]
    definition = DataDefinition(
        numerical_columns=plan.num_cols,
        categorical_columns=plan.cat_cols,
        embeddings={EMB: plan.emb_cols},
    )
    with _pca_picture():
        return Report(metrics).run(
            reference_data=Dataset.from_pandas(plan.ref_df, data_definition=definition),
            current_data=Dataset.from_pandas(plan.cur_df, data_definition=definition),
        )


def report_values(snapshot: Any) -> dict[str, float]:
    """The report's value per test, keyed like `cscl.monitoring.drift.drift_values`."""
    values: dict[str, float] = {}
    for m in snapshot.dict()["metrics"]:
        cfg, v = m["config"], m["value"]
        values[cfg.get("column") or cfg.get("embeddings_name")] = (
            float(v) if isinstance(v, int | float) else float("nan")
        )
    return values


def write_report_html(plan: DriftPlan, path: Path) -> None:
    """Evidently's page of the plan (`add_headline` then puts our verdict on top)."""
    render_report(plan).save_html(str(path))


_COLOUR = {"drift": "#cf222e", "no drift": "#1a7f37"}


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))


def _signal_rows(drift: dict[str, Any], drove: list[str], retrain_on: list[str]) -> str:
    rows = []
    for name, s in drift["signals"].items():
        cols = s.get("columns") or {}
        drifted = [
            f"{html.escape(c)} ({cols[c]['method']} {_fmt(cols[c]['value'])} "
            f"{'<' if cols[c]['kind'] == 'p_value' else '≥'} {_fmt(cols[c]['threshold'])})"
            for c in s.get("drifted_columns", [])
        ]
        if cols:
            measure = f"{_fmt(s['value'])} drifted column(s), drift at ≥ {_fmt(s['threshold'])}"
        elif s.get("value") is not None:
            measure = f"{html.escape(str(s['method']))} {_fmt(s['value'])}, drift above "
            measure += _fmt(s["threshold"])
        else:
            measure = html.escape(s.get("reason") or "")
        cls = "drove" if name in drove else s["status"]
        rows.append(
            f"<tr class='{cls}'><td><b>{html.escape(name)}</b></td>"
            f"<td>{html.escape(s['status'])}</td><td>{measure}</td>"
            f"<td>{'yes' if name in retrain_on else 'no'}</td>"
            f"<td>{'; '.join(drifted)}</td></tr>"
        )
    return "".join(rows)


def verdict_headline_html(drift: dict[str, Any]) -> str:
    """Our verdict as the first thing on the page: what, why, against which thresholds."""
    verdict = drift["verdict"]
    retrain_on = list((drift.get("policy") or {}).get("retrain_on") or [])
    drove = [n for n, s in drift["signals"].items() if s["status"] == "drift" and n in retrain_on]
    colour = _COLOUR.get(verdict, "#6e7781")
    sizes = drift["sample_sizes"]
    action = drift.get("retraining") or {}
    why = (
        f"driven by: <b>{html.escape(', '.join(drove))}</b>"
        if drove
        else html.escape(drift["reason"])
    )
    table = ""
    if drift["signals"]:
        table = (
            "<table class=cscl-signals><tr><th>signal</th><th>status</th><th>measure vs "
            "threshold</th><th>counts for the verdict (retrain_on)</th><th>drifted columns"
            f"</th></tr>{_signal_rows(drift, drove, retrain_on)}</table>"
        )
    window = drift["window"]
    return f"""<div id="cscl-verdict" style="font-family:sans-serif;margin:1em 1.5em;
padding:0.8em 1.2em;border:3px solid {colour};border-radius:6px;background:#fff">
<style>#cscl-verdict table{{border-collapse:collapse;margin-top:0.5em}}
#cscl-verdict td,#cscl-verdict th{{border-bottom:1px solid #ddd;padding:3px 8px;font-size:13px;
text-align:left}}#cscl-verdict tr.drove td{{background:#ffebe9}}</style>
<h1 style="margin:0.2em 0;color:{colour}">Verdict: {html.escape(verdict.upper())}</h1>
<p style="font-size:15px">{why}</p>
<p>Model <b>{html.escape(str(drift["model_version"]))}</b>, window {window["since"]} ..
{window["until"]}: {sizes["current"]} slides against {sizes["reference"]} reference slides.
Retraining: {html.escape(str(action.get("action")))} — {html.escape(str(action.get("reason")))}.
</p>{table}
<p style="color:#57606a;font-size:12px">The verdict is cscl's drift policy (drift.json). The
Evidently report below shows the same tests; its own headline ("data drift detected / not
detected") applies Evidently's per-test rules and can differ from the verdict.</p></div>"""


def add_headline(path: Path, drift: dict[str, Any]) -> None:
    """Put our verdict at the top of an HTML page (right after `<body>`) and in its title."""
    page = Path(path).read_text(encoding="utf-8")
    head = verdict_headline_html(drift)
    m = re.search(r"<body[^>]*>", page, flags=re.IGNORECASE)
    page = page[: m.end()] + head + page[m.end() :] if m else head + page
    title = f"cscl drift: {drift['verdict']} · {drift['model_version']}"
    page = re.sub(
        r"<title>.*?</title>",
        f"<title>{html.escape(title)}</title>",
        page,
        count=1,
        flags=re.IGNORECASE | re.DOTALL,
    )
    Path(path).write_text(page, encoding="utf-8")
