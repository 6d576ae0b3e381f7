"""Registration tables: reading, writing and turning rows into 2×3 matrices.

One convention everywhere (docs/CONTRACTS.md): `m00..m12` map H&E level-0 (x, y) to IHC level-0
(x, y), `[x', y'] = M @ [x, y, 1]`. The synthetic `transforms.csv` uses the same columns, so the
true transforms can be used in place of estimated ones (e.g. to isolate registration error).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from cscl.errors import InputError
from cscl.io import storage

MATRIX_COLUMNS = ("m00", "m01", "m02", "m10", "m11", "m12")
REGISTRATION_COLUMNS = (
    "case_id",
    "stain",
    "he_slide_id",
    "ihc_slide_id",
    *MATRIX_COLUMNS,
    "score",
    "ok",
    "error_um",
    "message",
    # added for real sections (issue 9); absent in older tables, which still load
    "texture",  # hematoxylin architecture correlation (wrong-slide QC)
    "field_uri",  # non-rigid displacement field (.npz, relative to this table) or empty
    "n_landmarks",
    "rtre_before_median",  # ANHIR rTRE of the identity map (landmarks as given)
    "rtre_before_max",
    "rtre_median",  # ANHIR rTRE of the estimated map (matrix + field)
    "rtre_max",
)


def matrix_of(row) -> np.ndarray:
    """The (2, 3) float64 matrix of a table row (Series, dict or namedtuple with m00..m12)."""
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)
    vals = [get(c, None) for c in MATRIX_COLUMNS]
    if any(v is None for v in vals):
        raise InputError(
            f"registration row lacks matrix column(s) "
            f"{[c for c, v in zip(MATRIX_COLUMNS, vals, strict=True) if v is None]}",
            hint="rows need m00, m01, m02, m10, m11, m12",
        )
    m = np.asarray(vals, dtype=np.float64).reshape(2, 3)
    if not np.isfinite(m).all():
        raise InputError(f"registration matrix has non-finite values: {m.tolist()}")
    return m


def apply_affine(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map points (N, 2) with a (2, 3) affine matrix: `M[:, :2] @ p + M[:, 2]`."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix must be (2, 3), got {m.shape}")
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The (2, 3) inverse of an invertible (2, 3) affine map (IHC → H&E)."""
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(m)[:2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """`outer ∘ inner` as a (2, 3) matrix: first apply `inner`, then `outer`."""
    a = np.vstack([np.asarray(outer, dtype=np.float64), [0.0, 0.0, 1.0]])
    b = np.vstack([np.asarray(inner, dtype=np.float64), [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def _to_bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in {"true", "1", "yes", "y", "t"}
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return False
    return bool(v)


def load_registrations(path: str | Path, *, resolve_fields: bool = True) -> pd.DataFrame:
    """Read `registration.csv` (from `cscl register`) or a synthetic `transforms.csv`.

    Both carry `case_id, stain, m00..m12`. A table without `ok` (true transforms) gets ok=True;
    `ok` read from CSV text becomes a real bool, so `df[df.ok]` keeps only usable pairs.
    """
    uri = str(path)
    data = storage.read_bytes(uri)
    try:
        if uri.lower().endswith(".parquet"):
            df = pd.read_parquet(io.BytesIO(data))
        else:
            df = pd.read_csv(io.BytesIO(data), dtype={"case_id": str}, keep_default_na=True)
    except Exception as exc:  # pandas raises many types for a malformed file
        raise InputError(f"cannot parse registration table {uri}: {exc}") from exc
    need = ["case_id", "stain", *MATRIX_COLUMNS]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(
            f"registration table {uri} is missing column(s) {missing}; it has {list(df.columns)}",
            hint="give registration.csv from `cscl register` or a synthetic transforms.csv",
        )
    df = df.copy()
    df["case_id"] = df["case_id"].astype(str)
    df["stain"] = df["stain"].astype(str).str.upper()
    for c in MATRIX_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce")
        inf = np.isinf(df[c].to_numpy(dtype=float))
        if inf.any():  # NaN = a pair that could not be registered; inf is never a matrix entry
            raise InputError(
                f"registration table {uri}: column {c!r} is infinite for (case, stain) "
                f"{df.loc[inf, ['case_id', 'stain']].values.tolist()[:5]}",
                hint="re-run `cscl register` for those pairs, or leave the matrix empty",
            )
    df["ok"] = df["ok"].map(_to_bool) if "ok" in df.columns else True
    # A row whose matrix could not be estimated is unusable whatever `ok` says.
    df.loc[df[list(MATRIX_COLUMNS)].isna().any(axis=1), "ok"] = False
    df["ok"] = df["ok"].astype(bool)
    if "message" in df.columns:
        df["message"] = df["message"].fillna("").astype(str)
    if "field_uri" in df.columns:
        df["field_uri"] = df["field_uri"].fillna("").astype(str)
    if "field_uri" in df.columns and resolve_fields:  # fields live beside the table
        df["field_uri"] = [
            storage.resolve_relative(u.strip(), uri) if isinstance(u, str) and u.strip() else ""
            for u in df["field_uri"]
        ]
    dup = df.duplicated(["case_id", "stain"])
    if dup.any():
        raise InputError(
            f"registration table {uri}: (case_id, stain) repeated: "
            f"{df.loc[dup, ['case_id', 'stain']].values.tolist()[:5]}"
        )
    return df.reset_index(drop=True)


def write_registrations(path: str | Path, df: pd.DataFrame) -> None:
    """Write the table with the contract's columns first, atomically (local or S3)."""
    cols = [c for c in REGISTRATION_COLUMNS if c in df.columns]
    cols += [c for c in df.columns if c not in cols]
    data = df[cols].to_csv(index=False, float_format="%.10g").encode()
    storage.write_bytes(str(path), data)
