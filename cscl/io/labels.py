"""Label values normalised once, for every reader of a labels table (eval, training, packaging).

Why: "positive", "POSITIVE" and "Positive " are one status to a pathologist but three classes to
a classifier (a silent AUC drop), and `os_time = inf` or a typo deep in a column used to surface
as a traceback far from the table. `normalise_labels` runs when labels are loaded and returns the
cleaned table with notes that say what was mapped; what cannot be mapped is an `InputError`
naming the case, the column and the value.

Column kinds (docs/CONTRACTS.md labels.csv):
- `<x>_status`: a binary status. Case, whitespace and common synonyms (pos/neg, +/−, 1/0,
  true/false, yes/no, high/low) map to `positive`/`negative` (`high`/`low` for Ki-67 and for
  columns written in high/low words). Any other value is refused.
- `<t>_time` / `<t>_event`: survival; times finite numbers (> 0 is checked when the task is
  used, `survival_arrays`), events 0/1 (synonyms as above).
- other text columns (subtype, split, …): multi-class; only case and whitespace are folded, to
  the spelling used most often in the column ("luma" and "LumA " → "LumA").
- other numeric columns: every value must be finite.
Empty cells (and NA, N/A, NaN, none, null) are missing labels, never a class.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from cscl.errors import InputError

STATUS_SUFFIX = "_status"
POSITIVE_NEGATIVE = ("positive", "negative")
HIGH_LOW = ("high", "low")
HIGH_LOW_COLUMNS = frozenset({"ki67_status"})
_ID_COLUMNS = ("case_id", "slide_id")
_TRUE = frozenset({"positive", "pos", "+", "+ve", "1", "1.0", "true", "t", "yes", "y", "high"})
_FALSE = frozenset(
    {"negative", "neg", "-", "\u2212", "\u2013", "-ve", "0", "0.0", "false", "f", "no", "n", "low"}
)
_MISSING = frozenset({"", "na", "n/a", "nan", "none", "null"})


def normalise_labels(
    df: pd.DataFrame, source: str = "labels", id_column: str = "case_id"
) -> tuple[pd.DataFrame, list[str]]:
    """(normalised copy of a labels table, notes saying what was mapped). See the module doc.

    `id_column` names the rows in errors (labels that arrive for served requests are keyed by
    request_id or slide_id, not case_id).
    """
    if id_column not in df.columns:
        raise InputError(
            f"{source} has no {id_column} column; columns: {list(df.columns)}",
            hint=f"a labels table needs one row per case with a {id_column} column",
        )
    df = df.copy()
    ids = {*_ID_COLUMNS, id_column}
    for col in ids & set(df.columns):
        df[col] = df[col].astype(str).str.strip()
    cases = df[id_column].to_numpy(str)
    notes: list[str] = []
    for col in df.columns:
        if col in ids:
            continue
        name = str(col)
        if name.endswith(STATUS_SUFFIX):
            pair = _status_pair(name, df[col])
            df[col], mapped = _map_binary(df[col], pair, name, cases, source)
        elif name.endswith("_event"):
            df[col], mapped = _map_binary(df[col], (1, 0), name, cases, source)
        elif name.endswith("_time") or _is_numeric(df[col]):
            df[col], mapped = _numbers(df[col], name, cases, source), {}
        else:
            df[col], mapped = _fold_case(df[col])
        if mapped:
            notes.append(f"{name}: mapped {mapped!r}")
    return df, notes


def _key(v) -> str | None:
    """The comparison form of a cell: stripped, lower case; None when missing."""
    if v is None or (isinstance(v, float | np.floating) and np.isnan(v)):
        return None
    if isinstance(v, float | np.floating) and float(v).is_integer():
        v = int(v)
    k = str(v).strip().lower()
    return None if k in _MISSING else k


def _plain(v):
    """A numpy scalar as the Python value it holds (reads as 2, not np.int64(2), in messages)."""
    return v.item() if isinstance(v, np.generic) else v


def _where(cases: np.ndarray, mask: np.ndarray) -> str:
    """'case c1, c7 (+3 more)' for the rows in `mask`."""
    bad = cases[np.asarray(mask, dtype=bool)].tolist()
    more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
    return f"case{'s' if len(bad) > 1 else ''} {', '.join(bad[:5])}{more}"


def _status_pair(name: str, col: pd.Series) -> tuple:
    """(positive word, negative word) of a status column: high/low for Ki-67-like columns."""
    if name.lower() in HIGH_LOW_COLUMNS:
        return HIGH_LOW
    keys = {_key(v) for v in col} - {None}
    if keys & {"high", "low"} and not keys & {"positive", "negative", "pos", "neg"}:
        return HIGH_LOW
    return POSITIVE_NEGATIVE


def _map_binary(col: pd.Series, pair: tuple, name: str, cases: np.ndarray, source: str):
    """Map a binary column to `pair` (true value, false value); refuse anything else."""
    out, mapped, bad = [], {}, []
    for i, v in enumerate(col):
        k = _key(v)
        if k is None:
            out.append(np.nan)
            continue
        if k in _TRUE:
            new = pair[0]
        elif k in _FALSE:
            new = pair[1]
        else:
            bad.append(i)
            out.append(np.nan)
            continue
        out.append(new)
        if (k not in {"1", "0"} or isinstance(new, str)) and v != new:  # '1' → 1 is no news
            mapped[_plain(v)] = new
    if bad:
        values = sorted({repr(_plain(col.iloc[i])) for i in bad})[:5]
        what = (
            "0 or 1 (1 = event, 0 = censored)"
            if isinstance(pair[0], int)
            else (f"a {pair[0]}/{pair[1]} status")
        )
        raise InputError(
            f"{source}: column {name!r} must be {what}; value(s) {', '.join(values)} cannot be "
            f"mapped ({_where(cases, np.isin(np.arange(len(col)), bad))})",
            hint=f"write {pair[0]} or {pair[1]} (or pos/neg, +/-, 1/0, true/false); "
            "leave the cell empty when it is unknown",
        )
    series = pd.Series(out, index=col.index, dtype=float if isinstance(pair[0], int) else object)
    if isinstance(pair[0], int) and series.notna().all():
        series = series.astype(np.int64)  # event columns stay integers when complete
    return series, mapped


def _is_numeric(col: pd.Series) -> bool:
    """A numeric column, or a text column whose non-missing cells all parse as numbers."""
    if pd.api.types.is_bool_dtype(col):
        return False
    if pd.api.types.is_numeric_dtype(col):
        return True
    present = col[[_key(v) is not None for v in col]]
    if present.empty:
        return False
    return bool(pd.to_numeric(present.astype(str).str.strip(), errors="coerce").notna().all())


def _numbers(col: pd.Series, name: str, cases: np.ndarray, source: str):
    """Float column; non-numbers and ±inf are refused by case (times ≤ 0: `survival_arrays`)."""
    text = col.map(lambda v: np.nan if _key(v) is None else v)
    num = pd.to_numeric(text.astype(str).str.strip().where(text.notna()), errors="coerce").astype(
        float
    )
    not_number = text.notna().to_numpy() & num.isna().to_numpy()
    if not_number.any():
        values = sorted({repr(v) for v in col[not_number]})[:5]
        raise InputError(
            f"{source}: column {name!r} has non-numeric value(s) {', '.join(values)} "
            f"({_where(cases, not_number)})",
            hint="write a number, or leave the cell empty when it is unknown",
        )
    arr = num.to_numpy()
    infinite = np.isinf(arr)
    if infinite.any():
        raise InputError(
            f"{source}: column {name!r} has a non-finite value ({_where(cases, infinite)}: "
            f"{sorted(set(arr[infinite].tolist()))})",
            hint="write a finite number, or leave the cell empty when it is unknown",
        )
    return num


def _fold_case(col: pd.Series):
    """Strip whitespace and fold case to the column's most frequent spelling (multi-class)."""
    if pd.api.types.is_bool_dtype(col):
        return col, {}
    keys = [_key(v) for v in col]
    stripped = [None if k is None else str(v).strip() for v, k in zip(col, keys, strict=True)]
    counts = Counter(s for s in stripped if s is not None)
    canon: dict[str, str] = {}
    for spelling, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        canon.setdefault(spelling.lower(), spelling)
    out, mapped = [], {}
    for v, s in zip(col, stripped, strict=True):
        if s is None:
            out.append(np.nan)
            continue
        new = canon[s.lower()]
        if v != new:
            mapped[v] = new
        out.append(new)
    return pd.Series(out, index=col.index, dtype=object), mapped
