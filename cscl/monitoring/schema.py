"""Flat column names shared by the reference set and the inference logs.

Both sides of a drift comparison must name the same quantity the same way, so the flattening of a
log record's nested `qc` and `predictions` lives in one place:

- QC: `qc_tissue_area_mm2`, `qc_mpp`, `qc_od_mean_0..2`, `qc_od_std_0..2` (optical density per RGB
  channel: stain colour), `qc_vendor` (categorical: the scanner).
- Predictions: `pred__<task>__<class>` (class probability) or `pred__<task>__risk_score`. For a
  two-class task only the last class (sorted) is kept: the other one is 1 - p and would count the
  same drift twice.
- Labels (target drift): `label__<task>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

QC_NUMERIC: tuple[str, ...] = (
    "qc_tissue_area_mm2",
    "qc_mpp",
    "qc_od_mean_0",
    "qc_od_mean_1",
    "qc_od_mean_2",
    "qc_od_std_0",
    "qc_od_std_1",
    "qc_od_std_2",
)
QC_CATEGORICAL: tuple[str, ...] = ("qc_vendor",)
QC_COLUMNS: tuple[str, ...] = QC_NUMERIC + QC_CATEGORICAL
PRED_PREFIX = "pred__"
LABEL_PREFIX = "label__"


class RecordError(ValueError):
    """One log record (or reference row) does not have the contract's shape; `reason` is a key."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _finite(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise RecordError("bad_qc", f"{what} is not a number")
    v = float(x)
    if not math.isfinite(v):
        raise RecordError("bad_qc", f"{what} is not finite")
    return v


def flatten_qc(qc: Any) -> tuple[list[float], str]:
    """(numeric values in `QC_NUMERIC` order, vendor) from a record's `qc` dict."""
    if not isinstance(qc, Mapping):
        raise RecordError("missing_qc", "qc is not an object")
    try:
        od_mean, od_std = qc["od_mean"], qc["od_std"]
        values = [_finite(qc["tissue_area_mm2"], "tissue_area_mm2"), _finite(qc["mpp"], "mpp")]
    except KeyError as exc:
        raise RecordError("missing_qc", f"qc has no {exc.args[0]}") from None
    for name, triple in (("od_mean", od_mean), ("od_std", od_std)):
        if not isinstance(triple, list | tuple) or len(triple) != 3:
            raise RecordError("bad_qc", f"{name} is not 3 numbers")
        values.extend(_finite(v, name) for v in triple)
    vendor = qc.get("vendor")
    return values, str(vendor) if vendor not in (None, "") else "unknown"


def prediction_columns(predictions: Mapping[str, Any]) -> list[str]:
    """Column names for one record's predictions (see module docstring), sorted."""
    cols: list[str] = []
    for task in sorted(predictions):
        value = predictions[task]
        if not isinstance(value, Mapping) or not value:
            raise RecordError("bad_predictions", f"task {task!r} is not a non-empty object")
        keys = sorted(value)
        if len(keys) == 2 and "risk_score" not in keys:
            keys = keys[1:]
        cols.extend(f"{PRED_PREFIX}{task}__{k}" for k in keys)
    return cols


def flatten_predictions(predictions: Any, columns: list[str]) -> list[float]:
    """Values of `columns` from a record's `predictions`; a missing task/class is a RecordError."""
    if not isinstance(predictions, Mapping):
        raise RecordError("missing_predictions", "predictions is not an object")
    out: list[float] = []
    for col in columns:
        task, _, key = col[len(PRED_PREFIX) :].partition("__")
        try:
            v = predictions[task][key]
        except (KeyError, TypeError):
            raise RecordError("missing_predictions", f"no {task}/{key}") from None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise RecordError("bad_predictions", f"{task}/{key} is not a finite number")
        out.append(float(v))
    return out
