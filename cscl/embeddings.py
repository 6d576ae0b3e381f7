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
    X = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    meta = table.drop(["embedding"]).to_pandas()
    meta["case_id"] = meta["case_id"].astype(str)
    return meta, X
