"""Data-validation gate: Great Expectations 1.x suites on the slide index, labels and slide QC.

Why a gate: training on a cohort with a missing H&E slide, an illegal label value or a slide at
the wrong magnification silently produces a worse model. The gate runs before extraction, writes
an HTML report people can read in the Kubeflow UI, returns metrics, and says pass/fail. The
pipeline stops on failure unless the user lowers `min_pass_rate`.

Three tables are validated: the slide index (from `cscl.ingest`), the labels (optional) and a
slide-QC table computed here (does OpenSlide open it, mpp, pyramid levels, tissue fraction).
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cscl.errors import InputError
from cscl.io import storage
from cscl.io.manifest import HE, load_labels
from cscl.wsi.qc import slide_qc
from cscl.wsi.readers import open_slide
from cscl.wsi.tissue import segment_tissue

# Legal values of the label columns cscl knows (synthetic cohorts, BCNB, TCGA-BRCA style).
# Other categorical columns are only checked for being present where declared.
DEFAULT_LABEL_VALUES: dict[str, list[str]] = {
    "split": ["train", "val", "test"],
    "subtype": ["LumA", "LumB", "HER2+", "TNBC", "IDC", "ILC"],
    "er_status": ["positive", "negative"],
    "pgr_status": ["positive", "negative"],
    "pr_status": ["positive", "negative"],
    "her2_status": ["positive", "negative", "equivocal"],
    "ki67_status": ["high", "low"],
}


@dataclass
class QCThresholds:
    """Limits of the slide-QC expectations. Defaults suit 20x–40x scans (0.2–0.6 µm/px)."""

    mpp_min: float = 0.1
    mpp_max: float = 2.0
    min_levels: int = 1
    min_tissue_fraction: float = 0.02
    max_tissue_fraction: float = 1.0


@dataclass
class ValidationResult:
    """Outcome of `validate_cohort`: the gate decision, metrics and the report location."""

    success: bool
    pass_rate: float
    metrics: dict[str, float]
    failures: list[dict] = field(default_factory=list)
    report_path: Path | None = None
    qc: pd.DataFrame | None = None

    def summary(self) -> str:
        head = "PASSED" if self.success else "FAILED"
        lines = [
            f"validation {head}: {self.metrics['expectations_passed']:.0f}/"
            f"{self.metrics['expectations_total']:.0f} expectations passed "
            f"(pass rate {self.pass_rate:.3f})"
        ]
        for f in self.failures:
            lines.append(
                f"  ✗ [{f['table']}] {f['expectation']} {f['column'] or ''}: {f['detail']}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Slide QC table
# ---------------------------------------------------------------------------------------------


def qc_slide(path: str | Path, mpp_override: float | None = None) -> dict:
    """QC numbers of one local slide: opens, mpp, levels, size, tissue fraction, error.

    Uses the same reader and tissue segmentation as extraction, so the gate judges exactly what
    extraction will see. Never raises: a slide that cannot be used is a row with the reason.
    """
    row: dict = {
        "opens": False,
        "mpp": math.nan,
        "levels": 0,
        "width": 0,
        "height": 0,
        "tissue_fraction": math.nan,
        "tissue_area_mm2": math.nan,
        "error": "",
    }
    try:
        wsi = open_slide(path, mpp=mpp_override)
    except Exception as exc:  # OpenSlide and the mpp resolver raise several types
        row["error"] = str(exc)
        return row
    with wsi:
        row.update(opens=True, levels=int(wsi.level_count), width=wsi.width, height=wsi.height)
        row["mpp"] = float(wsi.mpp)
        try:
            q = slide_qc(wsi, segment_tissue(wsi))
            row["tissue_fraction"] = float(q["tissue_fraction"])
            row["tissue_area_mm2"] = float(q["tissue_area_mm2"])
        except Exception as exc:
            row["error"] = f"tissue segmentation failed: {exc}"
    return row


def slide_qc_table(
    index: pd.DataFrame,
    scratch: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """QC every slide of the index. S3 slides are downloaded (checksum-verified) one at a time.

    A slide that cannot be fetched or opened is a row with `opens=False` and the reason, not an
    exception: the report must list every bad slide at once.
    """
    own_scratch = scratch is None
    scratch = Path(scratch or tempfile.mkdtemp(prefix="cscl-qc-"))
    rows = []
    it = index.itertuples(index=False)
    if progress:
        from rich.progress import track

        it = track(it, total=len(index), description="slide QC")
    try:
        for r in it:
            local, fetched = None, False
            try:
                if storage.is_s3(r.slide_uri):
                    name = r.slide_uri.rsplit("/", 1)[-1]
                    local = storage.download(r.slide_uri, scratch / name)
                    fetched = True
                else:
                    local = storage.local_path(r.slide_uri)
                mpp = getattr(r, "mpp", None)
                qc = qc_slide(local, None if mpp is None or pd.isna(mpp) else float(mpp))
            except Exception as exc:
                qc = {"opens": False, "error": str(exc)}
            finally:
                if fetched and local is not None and Path(local).exists():
                    Path(local).unlink()
            rows.append({"slide_id": r.slide_id, "case_id": r.case_id, "stain": r.stain, **qc})
    finally:
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Great Expectations suites
# ---------------------------------------------------------------------------------------------


def _index_suite(gxe) -> list:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="case_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="slide_uri"),
        gxe.ExpectColumnValuesToBeUnique(column="slide_uri"),
        gxe.ExpectColumnValuesToBeUnique(column="slide_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="stain", regex=r"^[A-Z0-9][A-Z0-9_\-+]*$"),
        # Every case needs exactly one H&E slide: pretraining anchors on it, inference uses it.
        gxe.ExpectColumnValuesToBeInSet(column="case_has_he", value_set=[True]),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=None),
        gxe.ExpectColumnValuesToBeBetween(column="size", min_value=1, max_value=None),
    ]


def _labels_suite(gxe, labels: pd.DataFrame, label_values: dict[str, list], cases: list) -> list:
    ex = [
        gxe.ExpectColumnValuesToNotBeNull(column="case_id"),
        gxe.ExpectColumnValuesToBeUnique(column="case_id"),
        # Labels for cases the manifest does not have point at a wrong file pairing.
        gxe.ExpectColumnValuesToBeInSet(column="case_id", value_set=list(cases)),
    ]
    for col, values in label_values.items():
        if col in labels.columns:
            ex.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=list(values)))
    for col in labels.columns:
        if col.endswith("_time"):
            ex.append(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0, strict_min=True))
            ex.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
        if col.endswith("_event"):
            ex.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[0, 1]))
    return ex


def _qc_suite(gxe, t: QCThresholds) -> list:
    return [
        gxe.ExpectColumnValuesToBeInSet(column="opens", value_set=[True]),
        gxe.ExpectColumnValuesToNotBeNull(column="mpp"),
        gxe.ExpectColumnValuesToBeBetween(column="mpp", min_value=t.mpp_min, max_value=t.mpp_max),
        gxe.ExpectColumnValuesToBeBetween(column="levels", min_value=t.min_levels),
        gxe.ExpectColumnValuesToBeBetween(
            column="tissue_fraction",
            min_value=t.min_tissue_fraction,
            max_value=t.max_tissue_fraction,
        ),
    ]


def _run_suites(tables: dict[str, tuple[pd.DataFrame, list]]) -> list[dict]:
    """Run one GX suite per table in an ephemeral context; flatten results to plain dicts."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_pandas("cscl")
    out: list[dict] = []
    for name, (df, expectations) in tables.items():
        asset = source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe(f"{name}-all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"cscl-{name}"))
        for e in expectations:
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate-{name}", data=batch, suite=suite)
        )
        res = vd.run(batch_parameters={"dataframe": df})
        for r in res.results:
            cfg = r.expectation_config
            kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
            result = r.to_json_dict().get("result") or {}
            exc = r.exception_info or {}
            raised = exc.get("raised_exception") if isinstance(exc, dict) else False
            out.append(
                {
                    "table": name,
                    "expectation": cfg.type,
                    "column": kw.get("column", ""),
                    "kwargs": {k: v for k, v in kw.items() if k != "column"},
                    "success": bool(r.success),
                    "unexpected_count": result.get("unexpected_count"),
                    "examples": [_plain(v) for v in (result.get("partial_unexpected_list") or [])][
                        :10
                    ],
                    "error": str(exc.get("exception_message")) if raised else "",
                }
            )
    return out


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _detail(r: dict, df_lookup: dict[str, pd.DataFrame]) -> str:
    if r["error"]:
        return r["error"]
    parts = []
    if r["unexpected_count"]:
        parts.append(f"{r['unexpected_count']} unexpected value(s) {r['examples']}")
    if r["kwargs"]:
        parts.append("expected " + ", ".join(f"{k}={v}" for k, v in r["kwargs"].items()))
    return "; ".join(parts) or "failed"


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def validate_cohort(
    index: pd.DataFrame,
    labels_uri: str | None = None,
    out_dir: str | Path | None = None,
    *,
    qc: pd.DataFrame | None = None,
    run_slide_qc: bool = True,
    thresholds: QCThresholds | None = None,
    label_values: dict[str, list] | None = None,
    min_pass_rate: float = 1.0,
) -> ValidationResult:
    """Validate a cohort; write `report.html`, `results.json`, `slide_qc.csv` to `out_dir`.

    `index` is the slide index from `cscl.ingest` (or a loaded manifest with a `size` column).
    The gate passes when the fraction of passed expectations is ≥ `min_pass_rate` (1.0 = all).
    """
    if not 0.0 <= min_pass_rate <= 1.0:
        raise InputError(f"min_pass_rate must be in [0, 1], got {min_pass_rate}")
    import great_expectations.expectations as gxe

    t = thresholds or QCThresholds()
    idx = index.copy()
    if "size" not in idx.columns:
        idx["size"] = 1
    he_cases = set(idx.loc[idx["stain"] == HE, "case_id"])
    idx["case_has_he"] = idx["case_id"].isin(he_cases)
    tables: dict[str, tuple[pd.DataFrame, list]] = {"slides": (idx, _index_suite(gxe))}

    labels = None
    if labels_uri:
        labels = load_labels(labels_uri)
        values = DEFAULT_LABEL_VALUES if label_values is None else label_values
        cases = sorted(set(idx["case_id"]))
        tables["labels"] = (labels, _labels_suite(gxe, labels, values, cases))
    if qc is None and run_slide_qc:
        qc = slide_qc_table(idx)
    if qc is not None:
        tables["slide_qc"] = (qc, _qc_suite(gxe, t))

    results = _run_suites(tables)
    n_total = len(results)
    n_ok = sum(r["success"] for r in results)
    pass_rate = n_ok / n_total if n_total else 1.0
    failures = [
        {**r, "detail": _detail(r, {k: v[0] for k, v in tables.items()})}
        for r in results
        if not r["success"]
    ]
    metrics: dict[str, float] = {
        "expectations_total": float(n_total),
        "expectations_passed": float(n_ok),
        "pass_rate": float(pass_rate),
        "n_slides": float(len(idx)),
        "n_cases": float(idx["case_id"].nunique()),
        "n_cases_without_he": float((~idx.drop_duplicates("case_id")["case_has_he"]).sum()),
    }
    if labels is not None:
        metrics["n_labelled_cases"] = float(len(labels))
    if qc is not None and len(qc):
        metrics["n_slides_unreadable"] = float((~qc["opens"].astype(bool)).sum())
        tf = pd.to_numeric(qc.get("tissue_fraction"), errors="coerce")
        metrics["tissue_fraction_median"] = float(np.nanmedian(tf)) if tf.notna().any() else 0.0
    success = pass_rate >= min_pass_rate
    result = ValidationResult(
        success=success, pass_rate=pass_rate, metrics=metrics, failures=failures, qc=qc
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result.report_path = write_html_report(out / "report.html", results, result, min_pass_rate)
        with storage.atomic_path(out / "results.json") as tmp:
            tmp.write_text(
                json.dumps(
                    {"success": success, "metrics": metrics, "results": results}, default=str
                )
            )
        if qc is not None:
            with storage.atomic_path(out / "slide_qc.csv") as tmp:
                qc.to_csv(tmp, index=False)
    return result


def write_html_report(
    path: Path, results: list[dict], res: ValidationResult, min_pass_rate: float
) -> Path:
    """A self-contained HTML page (the Kubeflow UI shows it as the task's HTML artifact)."""
    colour = "#1a7f37" if res.success else "#cf222e"
    rows = []
    for r in results:
        mark = "✓" if r["success"] else "✗"
        detail = "" if r["success"] else _detail(r, {})
        rows.append(
            f"<tr class={'ok' if r['success'] else 'bad'}><td>{mark}</td>"
            f"<td>{html.escape(r['table'])}</td><td>{html.escape(r['expectation'])}</td>"
            f"<td>{html.escape(str(r['column']))}</td>"
            f"<td>{html.escape(json.dumps(r['kwargs'], default=str))}</td>"
            f"<td>{html.escape(detail)}</td></tr>"
        )
    qc_html = ""
    if res.qc is not None and len(res.qc):
        qc_html = "<h2>Slide QC</h2>" + res.qc.to_html(index=False, float_format="%.3f", border=0)
    metrics = "".join(f"<li>{html.escape(k)}: {v:g}</li>" for k, v in res.metrics.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>cscl data validation</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;font-size:13px}}
tr.bad{{background:#ffebe9}} h1 span{{color:{colour}}}</style></head><body>
<h1>Data validation: <span>{"PASSED" if res.success else "FAILED"}</span></h1>
<p>{res.metrics["expectations_passed"]:.0f} of {res.metrics["expectations_total"]:.0f}
expectations passed (pass rate {res.pass_rate:.3f}; gate requires ≥ {min_pass_rate:.3f}).
Suites run with Great Expectations.</p><ul>{metrics}</ul>
<h2>Expectations</h2><table><tr><th></th><th>table</th><th>expectation</th><th>column</th>
<th>arguments</th><th>problem</th></tr>{"".join(rows)}</table>{qc_html}</body></html>"""
    with storage.atomic_path(Path(path)) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)
