"""Slide embeddings table (Parquet): what `cscl embed` writes and evaluation/monitoring read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cscl.errors import InputError
from cscl.io.storage import atomic_path

META_COLUMNS = ("case_id", "slide_id", "stain", "model_version")


def write_embeddings(path: str | Path, meta: pd.DataFrame, X: np.ndarray) -> Path:
    """Write one row per slide: the `META_COLUMNS` of `meta` plus an `embedding` list column."""
    if len(meta) != len(X):
        raise ValueError(f"{len(meta)} rows of metadata but {len(X)} embeddings")
    table = pa.Table.from_pandas(meta.reset_index(drop=True), preserve_index=False)
    flat = pa.array(np.asarray(X, dtype=np.float32).ravel())
    table = table.append_column(
        "embedding", pa.FixedSizeListArray.from_arrays(flat, int(X.shape[1]) if len(X) else 0)
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_embeddings(path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(metadata without the embedding column, embeddings (N, E) float32)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"cannot read embeddings table {path}: {exc}") from exc
    if "embedding" not in table.column_names or "case_id" not in table.column_names:
        raise InputError(f"{path} is not an embeddings table (needs case_id and embedding columns)")
    meta = table.drop(["embedding"]).to_pandas()
    meta["case_id"] = meta["case_id"].astype(str)
    X = _embedding_matrix(
        list(table.column("embedding").to_numpy(zero_copy_only=False)), meta, path
    )
    return meta, X


def _embedding_matrix(rows: list, meta: pd.DataFrame, path) -> np.ndarray:
    """(N, E) float32 from the embedding cells; empty, ragged or non-finite rows are refused.

    A NaN that reached a classifier would fail deep inside scikit-learn with no case named.
    """
    ids = (meta["slide_id"] if "slide_id" in meta.columns else meta["case_id"]).astype(str)
    lengths = [-1 if r is None else len(r) for r in rows]
    dim = max(set(lengths), key=lengths.count) if lengths else 0
    odd = [i for i, n in enumerate(lengths) if n != dim or n <= 0]
    if odd:
        raise InputError(
            f"embeddings table {path}: slide(s) {ids.iloc[odd].tolist()[:5]} have an empty or "
            f"different-length embedding ({[lengths[i] for i in odd][:5]} values, not {dim})",
            hint="re-run `cscl embed` for the whole cohort with one model",
        )
    with np.errstate(over="ignore", invalid="ignore"):
        X = np.stack([np.asarray(r, dtype=np.float64) for r in rows]).astype(np.float32)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InputError(
            f"embeddings table {path}: column 'embedding' has non-finite values (NaN/inf) for "
            f"slide(s) {ids[bad].tolist()[:5]} (case(s) {meta['case_id'][bad].tolist()[:5]})",
            hint="re-embed those slides (check their feature files with `cscl extract`)",
        )
    return X
