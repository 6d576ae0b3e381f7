"""The reference set of a model version: what "normal" inputs looked like at training time.

`reference.parquet` sits in the model bundle directory (docs/CONTRACTS.md, "Model bundle"), one
row per training H&E slide:

| column | type | meaning |
|---|---|---|
| `slide_id` | str | training slide |
| `model_version` | str | the version this reference belongs to (also in the file metadata) |
| `embedding` | fixed-size list<float32> | slide embedding |
| `qc_*` | float32 / str | QC features (see `cscl.monitoring.schema`) |
| `pred__<task>__<class>` | float32 | the model's own predictions on the slide |
| `label__<task>` | str, optional | ground truth, enables target drift |

Drift monitoring compares inference logs with this file, so it must be produced by the same model
(same embedding space and heads) that serves: `cscl package` writes it with `write_reference`.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cscl.errors import InputError
from cscl.io import storage
from cscl.monitoring.schema import (
    LABEL_PREFIX,
    PRED_PREFIX,
    QC_CATEGORICAL,
    QC_NUMERIC,
    RecordError,
    flatten_predictions,
    flatten_qc,
    prediction_columns,
)

REFERENCE_FILE = "reference.parquet"
SCHEMA_VERSION = "cscl.reference/v1"


@dataclass
class ReferenceSet:
    """A loaded reference set: arrays ready for drift computation."""

    model_version: str
    slide_ids: list[str]
    embeddings: np.ndarray  # (N, D) float32
    qc: pd.DataFrame  # QC_NUMERIC (float32) + QC_CATEGORICAL (str)
    predictions: pd.DataFrame  # pred__* columns, float32
    labels: pd.DataFrame | None  # label__* columns (str), or None
    uri: str

    @property
    def pred_columns(self) -> list[str]:
        return list(self.predictions.columns)

    def __len__(self) -> int:
        return len(self.slide_ids)


def write_reference(
    path: str | Path,
    embeddings: np.ndarray,
    predictions: Sequence[Mapping[str, Any]],
    qc_records: Sequence[Mapping[str, Any]],
    model_version: str,
    *,
    slide_ids: Sequence[str] | None = None,
    labels: Mapping[str, Sequence[Any]] | None = None,
) -> str:
    """Write `reference.parquet` for a model version; returns where it was written.

    Args:
        path: a file (`…/reference.parquet`) or a bundle directory (local or s3://); atomic.
        embeddings: (N, D) slide embeddings of the training H&E slides.
        predictions: N dicts in the inference-log shape, e.g.
            `{"er_status": {"negative": .3, "positive": .7}, "os": {"risk_score": 1.2}}`.
        qc_records: N dicts in the inference-log `qc` shape (tissue_area_mm2, mpp, od_mean[3],
            od_std[3], vendor) — e.g. the `qc` root attribute of each feature file.
        model_version: the version being packaged.
        slide_ids: optional ids (default `slide0000`…).
        labels: optional `{task: N values}` ground truth (enables target drift later).
    """
    X = np.asarray(embeddings, dtype=np.float32)
    n = len(X)
    if X.ndim != 2 or n == 0:
        raise InputError(f"reference embeddings must be a non-empty (N, D) array, got {X.shape}")
    if len(predictions) != n or len(qc_records) != n:
        raise InputError(
            f"reference set: {n} embeddings but {len(predictions)} predictions and "
            f"{len(qc_records)} QC records",
            hint="pass one prediction dict and one QC dict per training slide",
        )
    ids = (
        [str(s) for s in slide_ids]
        if slide_ids is not None
        else [f"slide{i:04d}" for i in range(n)]
    )
    if len(ids) != n:
        raise InputError(f"reference set: {n} embeddings but {len(ids)} slide ids")
    pcols = prediction_columns(predictions[0])
    try:
        qc_rows = [flatten_qc(q) for q in qc_records]
        pred_rows = [flatten_predictions(p, pcols) for p in predictions]
    except RecordError as exc:
        raise InputError(f"reference set for {model_version}: {exc}") from exc
    cols: dict[str, Any] = {"slide_id": ids, "model_version": [model_version] * n}
    qnum = np.asarray([r[0] for r in qc_rows], dtype=np.float32)
    for j, c in enumerate(QC_NUMERIC):
        cols[c] = qnum[:, j]
    cols[QC_CATEGORICAL[0]] = [r[1] for r in qc_rows]
    parr = np.asarray(pred_rows, dtype=np.float32).reshape(n, len(pcols))
    for j, c in enumerate(pcols):
        cols[c] = parr[:, j]
    for task, values in (labels or {}).items():
        if len(values) != n:
            raise InputError(f"reference labels for {task!r}: {len(values)} values, expected {n}")
        cols[f"{LABEL_PREFIX}{task}"] = [None if _missing(v) else str(v) for v in values]
    table = pa.Table.from_pydict(cols)
    table = table.append_column(
        "embedding", pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])
    )
    meta = {"schema": SCHEMA_VERSION, "model_version": model_version, "n": n, "dim": X.shape[1]}
    table = table.replace_schema_metadata({b"cscl_reference": json.dumps(meta).encode()})
    uri = str(path)
    if not uri.endswith(".parquet"):
        uri = uri.rstrip("/") + "/" + REFERENCE_FILE
    if storage.is_s3(uri):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(uri, buf.getvalue())
    else:
        with storage.atomic_path(storage.local_path(uri)) as tmp:
            pq.write_table(table, tmp)
    return uri


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)  # None or NaN: not labelled


def resolve_reference_uri(ref: str) -> str:
    """A `.parquet` URI, or a bundle dir / `models/<name>/<V>/` prefix holding one.

    Looks for `<ref>/reference.parquet`, then `<ref>/bundle/reference.parquet`.
    """
    ref = str(ref)
    if ref.endswith(".parquet"):
        candidates = [ref]
    else:
        base = ref.rstrip("/")
        candidates = [f"{base}/{REFERENCE_FILE}", f"{base}/bundle/{REFERENCE_FILE}"]
    for c in candidates:
        if storage.exists(c):
            return c
    raise InputError(
        f"no reference set found: looked for {' and '.join(candidates)}",
        hint="the model version has no reference.parquet: package it with `cscl package` "
        "(which calls cscl.monitoring.reference.write_reference) or pass --reference",
    )


def load_reference(uri: str, *, model_version: str | None = None) -> ReferenceSet:
    """Read a reference set (file, bundle dir or model prefix; local or s3://).

    Raises InputError when there is none, when it is not a reference table, or when it belongs to
    another model version than `model_version`.
    """
    uri = resolve_reference_uri(uri)
    try:
        if storage.is_s3(uri):
            with tempfile.TemporaryDirectory() as d:
                local = storage.download(uri, Path(d) / REFERENCE_FILE)
                table = pq.read_table(local)
        else:
            table = pq.read_table(storage.local_path(uri))
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"cannot read reference set {uri}: {exc}") from exc
    names = table.column_names
    missing = [c for c in ("slide_id", "embedding", *QC_NUMERIC, *QC_CATEGORICAL) if c not in names]
    if missing:
        raise InputError(
            f"{uri} is not a reference set: missing columns {missing}",
            hint="write it with cscl.monitoring.reference.write_reference",
        )
    meta = json.loads((table.schema.metadata or {}).get(b"cscl_reference", b"{}"))
    version = str(meta.get("model_version") or table.column("model_version")[0].as_py())
    if model_version is not None and version != model_version:
        raise InputError(
            f"reference set {uri} belongs to model version {version!r}, not {model_version!r}",
            hint="pass the reference.parquet of the model version being monitored",
        )
    X = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    df = table.drop(["embedding"]).to_pandas()
    qc = df[list(QC_NUMERIC)].astype(np.float32)
    qc[QC_CATEGORICAL[0]] = df[QC_CATEGORICAL[0]].astype(str).to_numpy()
    preds = df[[c for c in names if c.startswith(PRED_PREFIX)]].astype(np.float32)
    lcols = [c for c in names if c.startswith(LABEL_PREFIX)]
    labels = df[lcols].astype(object) if lcols else None
    return ReferenceSet(
        model_version=version,
        slide_ids=df["slide_id"].astype(str).tolist(),
        embeddings=X,
        qc=qc.reset_index(drop=True),
        predictions=preds.reset_index(drop=True),
        labels=labels,
        uri=uri,
    )
