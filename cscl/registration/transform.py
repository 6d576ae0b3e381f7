"""The H&E → IHC map as used by location pairing: an affine matrix, optionally refined non-rigidly.

Real serial sections are not rigid copies of each other (they shrink, stretch and fold unevenly),
so `cscl register` may add a dense displacement field to the affine matrix. The full map of an H&E
level-0 point p is `M @ (p + D(p))`: `D` is sampled on a regular grid over the H&E slide
(`grid_to_level0` gives the grid pixel centre → H&E level-0 (x, y)) and interpolated bilinearly,
in H&E level-0 pixels. It is stored as one `.npz` per pair (`fields/<case>_<stain>.npz` beside
registration.csv, referenced by the table's `field_uri` column).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cscl.errors import InputError
from cscl.io import storage
from cscl.registration.io import apply_affine, invert_affine, matrix_of


@dataclass
class DisplacementField:
    """`dx, dy` (h, w) float32 in H&E level-0 px at grid pixels; `grid_to_level0` (2, 3)."""

    dx: np.ndarray
    dy: np.ndarray
    grid_to_level0: np.ndarray

    def at(self, xy_level0: np.ndarray) -> np.ndarray:
        """Displacement (N, 2) at H&E level-0 points (edge values continue outside the grid)."""
        g = apply_affine(invert_affine(self.grid_to_level0), xy_level0)
        coords = [g[:, 1], g[:, 0]]
        dx = ndimage.map_coordinates(self.dx, coords, order=1, mode="nearest")
        dy = ndimage.map_coordinates(self.dy, coords, order=1, mode="nearest")
        return np.stack([dx, dy], axis=1).astype(np.float64)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            dx=self.dx.astype(np.float32),
            dy=self.dy.astype(np.float32),
            grid_to_level0=np.asarray(self.grid_to_level0, dtype=np.float64),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "displacement field") -> DisplacementField:
        try:
            z = np.load(io.BytesIO(data))
            f = cls(z["dx"], z["dy"], z["grid_to_level0"])
        except Exception as exc:  # numpy raises many types for a damaged file
            raise InputError(
                f"cannot read {name}: {exc}",
                hint="rerun `cscl register` (it rewrites fields/), or drop the field_uri column "
                "to use the affine matrix alone",
            ) from exc
        if f.dx.shape != f.dy.shape or f.dx.ndim != 2 or f.grid_to_level0.shape != (2, 3):
            raise InputError(f"{name}: dx/dy/grid_to_level0 have inconsistent shapes")
        return f


@dataclass
class Transform:
    """H&E level-0 (x, y) → IHC level-0 (x, y): `matrix @ (p + field(p))`."""

    matrix: np.ndarray  # (2, 3)
    field: DisplacementField | None = None

    def apply(self, xy_level0: np.ndarray) -> np.ndarray:
        pts = np.asarray(xy_level0, dtype=np.float64).reshape(-1, 2)
        if self.field is not None and len(pts):
            pts = pts + self.field.at(pts)
        return apply_affine(self.matrix, pts)


def save_field(uri: str, field: DisplacementField) -> None:
    storage.write_bytes(uri, field.to_bytes())


def load_field(uri: str) -> DisplacementField:
    return DisplacementField.from_bytes(storage.read_bytes(uri), name=uri)


def transform_of(row) -> Transform:
    """The full map of a registration row: its matrix, plus its field when `field_uri` is set.

    `load_registrations` makes a relative `field_uri` absolute (relative to the table).
    """
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)
    uri = get("field_uri", None)
    has = isinstance(uri, str) and uri.strip() != ""
    return Transform(matrix_of(row), load_field(uri) if has else None)


def map_points(mapping, xy: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) matrix or anything with `.apply(xy)` (a `Transform`) to (N, 2) points."""
    if hasattr(mapping, "apply"):
        return mapping.apply(xy)
    return apply_affine(mapping, xy)
