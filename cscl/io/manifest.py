"""Cohort manifest and labels tables (docs/CONTRACTS.md): loading and validation.

Relative `slide_uri`s are resolved against the manifest's own location, so a cohort folder can be
uploaded to S3 as it is. Every error names the table, the row and the column.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from cscl.errors import InputError
from cscl.io import storage
from cscl.io.labels import normalise_labels

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("case_id", "stain", "slide_uri")
HE = "HE"
REFERENCE_IHC = ("HER2", "KI67", "ER", "PGR")
_STAIN_RE = re.compile(r"^[A-Z0-9][A-Z0-9_\-+]*$")


def read_table(uri: str) -> pd.DataFrame:
    """Read a CSV or Parquet table from a local path or s3:// URI."""
    data = storage.read_bytes(uri)
    try:
        if str(uri).lower().endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data), dtype={"case_id": str, "slide_id": str})
    except Exception as exc:  # pandas raises many types for a malformed file
        raise InputError(
            f"cannot parse table {uri}: {exc}", hint="give a CSV or Parquet file"
        ) from exc


def slide_id_from_uri(uri: str) -> str:
    """Default slide id: the file name without its extension (e.g. `case001_HE`)."""
    s = str(uri)
    name = (
        storage.local_path(s).name
        if s.startswith("file://")
        else PurePosixPath(s.split("?")[0]).name
    )
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name.rsplit(".", 1)[0] if "." in name else name


def validate_manifest(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check columns and values; return a normalised copy with `slide_id` and `mpp` columns."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{source} is missing column(s) {missing}; it has {list(df.columns)}",
            hint="a manifest needs case_id, stain, slide_uri (and optionally mpp, slide_id)",
        )
    if df.empty:
        raise InputError(f"{source} has no rows")
    df = df.copy()
    for col in MANIFEST_COLUMNS:
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            rows = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())][:5]
            raise InputError(f"{source}: empty {col} on line(s) {rows}")
        df[col] = df[col].astype(str).str.strip()
    df["stain"] = df["stain"].str.upper().replace({"H&E": HE, "HE": HE, "H_E": HE})
    bad_stain = ~df["stain"].str.match(_STAIN_RE)
    if bad_stain.any():
        raise InputError(
            f"{source}: invalid stain name(s) {sorted(df.loc[bad_stain, 'stain'].unique())}",
            hint="use HE or an upper-case marker name such as HER2, KI67, ER, PGR",
        )
    dup = df["slide_uri"].duplicated()
    if dup.any():
        raise InputError(f"{source}: slide_uri not unique: {df.loc[dup, 'slide_uri'].tolist()[:5]}")
    if "slide_id" not in df.columns:
        df["slide_id"] = df["slide_uri"].map(slide_id_from_uri)
    df["slide_id"] = df["slide_id"].astype(str)
    dup = df["slide_id"].duplicated()
    if dup.any():
        raise InputError(
            f"{source}: slide ids not unique: {df.loc[dup, 'slide_id'].tolist()[:5]}",
            hint="add a unique slide_id column",
        )
    if "mpp" in df.columns:
        mpp = pd.to_numeric(df["mpp"], errors="coerce")
        bad = df["mpp"].notna() & (mpp.isna() | ~np.isfinite(mpp) | (mpp <= 0))
        if bad.any():
            raise InputError(
                f"{source}: mpp must be a positive, finite number, got "
                f"{df.loc[bad, 'mpp'].tolist()[:5]} for slide(s) {df.loc[bad, 'slide_uri'].tolist()[:5]}",
                hint="write the scan's µm/px (e.g. 0.25), or leave mpp empty to read it from the slide",
            )
        df["mpp"] = mpp
    else:
        df["mpp"] = np.nan
    he_counts = df[df["stain"] == HE].groupby("case_id").size()
    multi = he_counts[he_counts > 1]
    if len(multi):
        raise InputError(f"{source}: case(s) with more than one HE slide: {list(multi.index)[:5]}")
    return df.reset_index(drop=True)


def load_manifest(uri: str) -> pd.DataFrame:
    """Load and validate a manifest; relative slide URIs become absolute."""
    df = validate_manifest(read_table(uri), source=str(uri))
    df["slide_uri"] = [storage.resolve_relative(u, str(uri)) for u in df["slide_uri"]]
    return df


def cases_without_he(df: pd.DataFrame) -> list[str]:
    """Cases that have IHC slides but no H&E (unusable for pretraining and H&E inference)."""
    has_he = set(df.loc[df["stain"] == HE, "case_id"])
    return sorted(set(df["case_id"]) - has_he)


def load_labels(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Labels (one row per case) from a path/URI or a table, normalised by `normalise_labels`.

    Every reader of labels (evaluation, training, packaging) comes through here, so a value is
    the same class everywhere. The notes saying what was mapped are logged and kept in
    `df.attrs["label_notes"]` for reports. Survival pairs `<t>_time`/`<t>_event` are checked.
    """
    name = "labels table" if isinstance(source, pd.DataFrame) else f"labels {source}"
    raw = source if isinstance(source, pd.DataFrame) else read_table(str(source))
    df, notes = normalise_labels(raw, name)
    dup = df["case_id"].duplicated()
    if dup.any():
        raise InputError(f"{name}: case_id repeated: {df.loc[dup, 'case_id'].tolist()[:5]}")
    for col in [c for c in df.columns if str(c).endswith("_time")]:
        ev = f"{str(col)[: -len('_time')]}_event"
        if ev not in df.columns:
            raise InputError(f"{name}: {col} has no matching {ev} column")
    for note in notes:
        log.warning("%s: %s", name, note)
    df = df.reset_index(drop=True)
    df.attrs["label_notes"] = notes
    return df


def label_notes(labels: pd.DataFrame) -> list[str]:
    """What `load_labels` mapped (e.g. "er_status: mapped {'POSITIVE': 'positive'}")."""
    return list(labels.attrs.get("label_notes", []))


def survival_arrays(labels: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(case_ids, time, event) for survival task `task`; rows with missing values dropped.

    Times must be > 0 and events 0/1: a silent wrong C-index is worse than an error.
    """
    tcol, ecol = f"{task}_time", f"{task}_event"
    if tcol not in labels.columns or ecol not in labels.columns:
        raise InputError(f"survival task {task!r} needs columns {tcol} and {ecol} in the labels")
    sub = labels[["case_id", tcol, ecol]].dropna()
    t = pd.to_numeric(sub[tcol], errors="coerce").to_numpy(float)
    e = pd.to_numeric(sub[ecol], errors="coerce").to_numpy(float)
    ids = sub["case_id"].astype(str).to_numpy()
    bad_t = ~np.isfinite(t) | (t <= 0)  # NaN here = not a number; inf = no duration at all
    if bad_t.any():
        raise InputError(
            f"survival task {task!r}: {tcol} must be > 0 (and finite), got "
            f"{sub[tcol][bad_t].tolist()[:5]} for case(s) {ids[bad_t].tolist()[:5]}",
            hint="fix those cells, or leave them empty when the time is unknown",
        )
    bad_e = ~np.isin(e, [0, 1])
    if bad_e.any():
        raise InputError(
            f"survival task {task!r}: {ecol} must be 0 or 1, got "
            f"{sub[ecol][bad_e].tolist()[:5]} for case(s) {ids[bad_e].tolist()[:5]}",
            hint="1 = event observed, 0 = censored",
        )
    return sub["case_id"].to_numpy(str), t, e.astype(bool)
