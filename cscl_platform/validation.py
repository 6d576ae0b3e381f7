"""Data-validation gate: Great Expectations 1.x suites on the slide index, labels and slide QC.

Why a gate: training on a cohort with a missing H&E slide, an illegal label value or a slide at
the wrong magnification silently produces a worse model. The gate runs before extraction, writes
an HTML report people can read in the Kubeflow UI, returns metrics, and says pass/fail. The
pipeline stops on failure unless the user lowers `min_pass_rate`.

Three tables are validated: the slide index (from `cscl.ingest`), the labels (optional) and a
slide-QC table computed here (does OpenSlide open it, mpp, pyramid levels, tissue fraction).
The report says each check as a sentence ("every slide has a resolution between 0.1 µm/px and
2 µm/px"), failed checks first, and shows every slide with its tissue outline, bad slides first.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cscl.errors import InputError
from cscl.io import storage
from cscl.io.manifest import HE, load_labels, read_table
from cscl.progress import track
from cscl.wsi.qc import slide_qc
from cscl.wsi.readers import open_slide
from cscl.wsi.tissue import save_qc_png, segment_tissue

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
            lines.append(f"  ✗ [{f['table']}] {describe_expectation(f)}: {f['detail']}")
        # the slides at fault with what to do (the slide QC's own message), not only the counts
        if self.qc is not None and "error" in self.qc and "slide_id" in self.qc:
            bad = self.qc[self.qc["error"].fillna("").astype(str) != ""]
            for sid, err in zip(bad["slide_id"], bad["error"], strict=True):
                lines.append(f"  slide {sid}: {err}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Slide QC table
# ---------------------------------------------------------------------------------------------


def qc_slide(
    path: str | Path, mpp_override: float | None = None, qc_png: str | Path | None = None
) -> dict:
    """QC numbers of one local slide: opens, mpp, levels, size, tissue fraction, error.

    Uses the same reader and tissue segmentation as extraction, so the gate judges exactly what
    extraction will see. Never raises: a slide that cannot be used is a row with the reason.
    With `qc_png`, also writes the slide with its tissue outline there (`save_qc_png`).
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
            mask = segment_tissue(wsi)
            q = slide_qc(wsi, mask)
            row["tissue_fraction"] = float(q["tissue_fraction"])
            row["tissue_area_mm2"] = float(q["tissue_area_mm2"])
        except Exception as exc:
            row["error"] = f"tissue segmentation failed: {exc}"
            return row
        if qc_png is not None:
            try:
                save_qc_png(wsi, mask, qc_png)
            except Exception as exc:  # a picture that fails must not fail the gate
                row["error"] = f"QC picture failed: {exc}"
    return row


def slide_qc_table(
    index: pd.DataFrame,
    scratch: str | Path | None = None,
    progress: bool = True,
    png_dir: str | Path | None = None,
) -> pd.DataFrame:
    """QC every slide of the index. S3 slides are downloaded (checksum-verified) one at a time.

    A slide that cannot be fetched or opened is a row with `opens=False` and the reason, not an
    exception: the report must list every bad slide at once. With `png_dir`, each slide's QC
    picture is written to `<png_dir>/<slide_id>.png` while the slide is at hand.
    """
    own_scratch = scratch is None
    scratch = Path(scratch or tempfile.mkdtemp(prefix="cscl-qc-"))
    rows = []
    it = index.itertuples(index=False)
    it = track(it, "slide QC", total=len(index), quiet=not progress)
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
                png = Path(png_dir) / f"{r.slide_id}.png" if png_dir is not None else None
                qc = qc_slide(local, None if mpp is None or pd.isna(mpp) else float(mpp), png)
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


def _offenders(r: dict, df: pd.DataFrame | None) -> list[str]:
    """Ids (slide_id, else case_id) of the rows holding the unexpected values: who to fix."""
    col = r["column"]
    if df is None or not col or col not in df.columns:
        return []
    id_col = next((c for c in ("slide_id", "case_id") if c in df.columns and c != col), None)
    if id_col is None:
        return []
    values = df[col]
    if r["expectation"] == "expect_column_values_to_not_be_null":
        hit = values.isna()
    else:
        examples = [v for v in r["examples"] if v is not None]
        hit = values.isin(examples) | (values.isna() if None in r["examples"] else False)
    return sorted({str(v) for v in df.loc[hit, id_col]})


def _detail(r: dict, df_lookup: dict[str, pd.DataFrame]) -> str:
    if r["error"]:
        return r["error"]
    parts = []
    if r["unexpected_count"]:
        parts.append(f"{r['unexpected_count']} unexpected value(s) {r['examples']}")
        who = _offenders(r, df_lookup.get(r["table"]))
        if who:
            more = f" and {len(who) - 8} more" if len(who) > 8 else ""
            parts[-1] += f" in {', '.join(who[:8])}{more}"
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
    """Validate a cohort; write `report.html`, `results.json`, `slide_qc.csv` to `out_dir`
    (and `qc/<slide_id>.png`, each slide with its tissue outline, when the QC runs here).

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
        try:
            labels = load_labels(labels_uri)
        except (
            InputError
        ):  # values no spelling maps: the label expectations name each in the report
            labels = read_table(labels_uri)
        values = DEFAULT_LABEL_VALUES if label_values is None else label_values
        cases = sorted(set(idx["case_id"]))
        tables["labels"] = (labels, _labels_suite(gxe, labels, values, cases))
    png_dir = Path(out_dir) / "qc" if out_dir is not None else None
    if qc is None and run_slide_qc:
        qc = slide_qc_table(idx, png_dir=png_dir)
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
        result.report_path = write_html_report(
            out / "report.html", results, result, min_pass_rate, thresholds=t, png_dir=png_dir
        )
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


# ---------------------------------------------------------------------------------------------
# The report: sentences a person reads, failures first, every slide with its tissue outline
# ---------------------------------------------------------------------------------------------

_SUBJECT = {"slides": "slide", "labels": "labelled case", "slide_qc": "slide"}
_NOUN = {
    "case_id": "case id",
    "slide_id": "slide id",
    "slide_uri": "file location (slide_uri)",
    "stain": "stain name",
    "size": "file size",
    "opens": "readability",
    "mpp": "resolution",
    "levels": "number of pyramid levels",
    "tissue_fraction": "share of its area covered by tissue",
}
_UNIT = {"mpp": " µm/px"}
_COUNTED = {"levels": "pyramid level(s)", "size": "byte(s) in its file"}  # "has ≥ 1 <unit>"
# Sentences that say what the check MEANS rather than how it is written.
_SPECIAL = {
    ("slides", "expect_column_values_to_be_in_set", "case_has_he"): "every case has an H&E slide",
    ("slides", "expect_column_values_to_be_unique", "slide_uri"): "no two slides share a file",
    ("slides", "expect_column_values_to_be_unique", "slide_id"): "no two slides share a slide id",
    ("slide_qc", "expect_column_values_to_be_in_set", "opens"): "every slide opens in the reader",
    ("slide_qc", "expect_column_values_to_not_be_null", "mpp"): "every slide states its resolution",
    ("labels", "expect_column_values_to_be_unique", "case_id"): "no case is labelled twice",
    ("labels", "expect_column_values_to_be_in_set", "case_id"): (
        "every labelled case is in the manifest"
    ),
}


def _num(v, column: str) -> str:
    if column == "tissue_fraction" and isinstance(v, int | float):
        return f"{v:.0%}"
    return f"{v:g}{_UNIT.get(column, '')}" if isinstance(v, int | float) else str(v)


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def describe_expectation(r: dict) -> str:
    """A sentence for one expectation result, e.g. "every slide has a resolution between 0.1 µm/px
    and 2 µm/px" — what the report shows instead of `expect_column_values_to_be_between`."""
    table, kind, col, kw = r["table"], r["expectation"], str(r["column"] or ""), r["kwargs"]
    if (table, kind, col) in _SPECIAL:
        return _SPECIAL[(table, kind, col)]
    who = _SUBJECT.get(table, f"row of {table}")
    noun = _NOUN.get(col, col)
    if kind == "expect_table_row_count_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        what = f"the {table} table has "
        if lo is not None and hi is not None:
            return what + f"between {lo} and {hi} rows"
        return what + (f"at least {lo} row(s)" if lo is not None else f"at most {hi} rows")
    if kind == "expect_column_values_to_not_be_null":
        return f"every {who} has {_a(noun)}"
    if kind == "expect_column_values_to_be_unique":
        return f"no two {who}s share a {noun}"
    if kind == "expect_column_values_to_match_regex":
        return f"every {who}'s {noun} matches the pattern {kw.get('regex')}"
    if kind == "expect_column_values_to_be_in_set":
        values = [str(v) for v in kw.get("value_set") or []]
        if len(values) == 1:
            return f"every {who}'s {noun} is {values[0]}"
        return f"every {who}'s {noun} is one of: {', '.join(values)}"
    if kind == "expect_column_values_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        above = "above" if kw.get("strict_min") else "at least"
        below = "below" if kw.get("strict_max") else "at most"
        if lo is not None and hi is not None:
            rng = f"between {_num(lo, col)} and {_num(hi, col)}"
        elif lo is not None:
            rng = f"{above} {_num(lo, col)}"
        else:
            rng = f"{below} {_num(hi, col)}"
        if col in _COUNTED:
            return f"every {who} has {rng} {_COUNTED[col]}"
        return f"every {who} has {_a(noun)} {rng}"
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    return f"{kind.replace('_', ' ')} ({col}{', ' + args if args else ''})"


def slide_problems(row: pd.Series, t: QCThresholds) -> list[str]:
    """What is wrong with one slide against the QC thresholds, in words (empty: nothing)."""
    if not bool(row.get("opens")):
        return [f"does not open: {row.get('error') or 'unknown reason'}"]
    out = []
    mpp, tf = row.get("mpp"), row.get("tissue_fraction")
    if mpp is None or pd.isna(mpp):
        out.append("no resolution (mpp)")
    elif not t.mpp_min <= mpp <= t.mpp_max:
        out.append(f"resolution {mpp:.3g} µm/px outside {t.mpp_min:g}–{t.mpp_max:g}")
    if int(row.get("levels") or 0) < t.min_levels:
        out.append(f"{row.get('levels')} pyramid levels, needs ≥ {t.min_levels}")
    if tf is None or pd.isna(tf):
        out.append("tissue not measured")
    elif not t.min_tissue_fraction <= tf <= t.max_tissue_fraction:
        out.append(
            f"tissue covers {tf:.1%}, expected {t.min_tissue_fraction:.0%}–"
            f"{t.max_tissue_fraction:.0%}"
        )
    if row.get("error") and not out:
        out.append(str(row["error"]))
    return out


def _inline_thumbnail(png: Path, side: int = 360) -> str | None:
    """The QC picture, shrunk, as a data: URI (the Kubeflow UI shows only the one HTML file)."""
    if not png.exists():
        return None
    with Image.open(png) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _slide_cards(qc: pd.DataFrame, t: QCThresholds, png_dir: Path | None) -> str:
    rows = [(r, slide_problems(r, t)) for _, r in qc.iterrows()]
    rows.sort(key=lambda rp: (not rp[1], str(rp[0].get("slide_id"))))  # bad slides first
    cards = []
    for r, problems in rows:
        sid = str(r.get("slide_id"))
        img = _inline_thumbnail(png_dir / f"{sid}.png") if png_dir is not None else None
        pic = (
            f"<a href='qc/{html.escape(sid)}.png'><img src='{img}' alt='{html.escape(sid)}'></a>"
            if img
            else "<div class=noimg>no picture</div>"
        )
        facts = [f"stain {html.escape(str(r.get('stain')))}"]
        if bool(r.get("opens")):
            facts += [
                f"{r.get('mpp'):.3g} µm/px",
                f"{int(r.get('levels') or 0)} level(s)",
                f"{int(r.get('width') or 0)}×{int(r.get('height') or 0)} px",
            ]
            if pd.notna(r.get("tissue_fraction")):
                facts.append(
                    f"tissue {r.get('tissue_fraction'):.0%} ({r.get('tissue_area_mm2'):.2f} mm²)"
                )
        issues = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        cards.append(
            f"<div class='slide{' bad' if problems else ''}'>{pic}<p><b>{html.escape(sid)}</b>"
            f"<br>{' · '.join(facts)}</p>{f'<ul>{issues}</ul>' if issues else ''}</div>"
        )
    n_bad = sum(bool(p) for _, p in rows)
    return (
        f"<h2>Slides ({len(rows)}; {n_bad} with a problem)</h2><p class=note>Each slide with "
        "its tissue outline (green) as the tissue segmentation of extraction sees it; click for "
        f"the full-size picture.</p><div class=slides>{''.join(cards)}</div>"
    )


def write_html_report(
    path: Path,
    results: list[dict],
    res: ValidationResult,
    min_pass_rate: float,
    *,
    thresholds: QCThresholds | None = None,
    png_dir: Path | None = None,
) -> Path:
    """A self-contained HTML page (the Kubeflow UI shows it as the task's HTML artifact): the
    gate's decision, each expectation as a sentence (failed first), each slide's thumbnail with
    its tissue outline (from `png_dir/<slide_id>.png` where one was drawn)."""
    colour = "#1a7f37" if res.success else "#cf222e"
    failed = iter(res.failures)  # the failed results in order, with details naming the rows
    details = [("" if r["success"] else next(failed)["detail"]) for r in results]
    rows = []
    order = sorted(range(len(results)), key=lambda i: results[i]["success"])  # failures first
    for r, detail in ((results[i], details[i]) for i in order):
        mark = "✓" if r["success"] else "✗"
        rows.append(
            f"<tr class={'ok' if r['success'] else 'bad'}><td>{mark}</td>"
            f"<td>{html.escape(describe_expectation(r))}</td>"
            f"<td>{html.escape(r['table'])}</td><td>{html.escape(detail)}</td>"
            f"<td><code>{html.escape(r['expectation'])}({html.escape(str(r['column']))})</code>"
            "</td></tr>"
        )
    slides_html = ""
    if res.qc is not None and len(res.qc):
        slides_html = _slide_cards(res.qc, thresholds or QCThresholds(), png_dir)
    metrics = "".join(f"<li>{html.escape(k)}: {v:g}</li>" for k, v in res.metrics.items())
    n_bad = sum(not r["success"] for r in results)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>cscl data validation</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1500px}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;font-size:14px}}
tr.bad{{background:#ffebe9}} h1 span{{color:{colour}}} code{{color:#6e7781;font-size:11px}}
.slides{{display:flex;flex-wrap:wrap;gap:12px}} .slide{{border:1px solid #ccc;border-radius:6px;
padding:6px;width:370px;font-size:13px}} .slide.bad{{border:2px solid #cf222e;background:#fff5f5}}
.slide img{{max-width:360px;max-height:360px;display:block;margin:auto}} .slide ul{{color:#cf222e;
padding-left:1.2em;margin:0}} .noimg{{height:80px;background:#eee;text-align:center;
line-height:80px;color:#888}} .note{{color:#57606a;font-size:13px}}</style></head><body>
<h1>Data validation: <span>{"PASSED" if res.success else "FAILED"}</span></h1>
<p>{res.metrics["expectations_passed"]:.0f} of {res.metrics["expectations_total"]:.0f}
checks passed{f", <b>{n_bad} failed</b>" if n_bad else ""} (pass rate {res.pass_rate:.3f}; the
gate requires ≥ {min_pass_rate:.3f}).</p>
<h2>Checks</h2><table><tr><th></th><th>check</th><th>table</th><th>problem</th>
<th>Great Expectations</th></tr>{"".join(rows)}</table>{slides_html}
<h2>Numbers</h2><ul>{metrics}</ul></body></html>"""
    with storage.atomic_path(Path(path)) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)
