"""Patch feature files (HDF5, TRIDENT/CLAM-compatible): the contract between extraction and training.

Layout (docs/CONTRACTS.md): dataset `features` (N, D) float32 (float16 on request), dataset
`coords` (N, 2) int64 level-0 top-left (x, y) with geometry attrs (TRIDENT's names, plus CLAM's
`patch_level`), root attrs `slide_id`, `stain`, `cscl_version`, `extractor_hash`. Written
atomically; a file with the same extractor hash is reused. CLAM and TRIDENT loaders read these
files as they are: float32 because CLAM's training feeds the array to a float32 model unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np

from cscl import __version__
from cscl.errors import InputError
from cscl.io.storage import atomic_path

COORD_ATTRS = (
    "patch_size",
    "patch_size_level0",
    "level0_magnification",
    "target_magnification",
    "level0_width",
    "level0_height",
    "mpp_level0",
    "target_mpp",
)
FEATURE_DTYPES = ("float32", "float16")
DEFAULT_FEATURE_DTYPE = "float32"  # float16 breaks CLAM training (Half input, Float weights)


@dataclass
class SlideFeatures:
    """Features of one slide, in memory."""

    features: np.ndarray  # (N, D)
    coords: np.ndarray  # (N, 2) int64, level-0 top-left
    slide_id: str
    stain: str
    extractor_hash: str
    encoder: str
    coord_attrs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # other root attrs (e.g. random_init, qc JSON)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def patch_size_level0(self) -> int:
        return int(self.coord_attrs.get("patch_size_level0", 0))


def feature_path(root: str | Path, slide_id: str) -> Path:
    return Path(root) / f"{slide_id}.h5"


def write_features(path: str | Path, sf: SlideFeatures, dtype: str = DEFAULT_FEATURE_DTYPE) -> Path:
    """Write atomically: readers never see a partial file under the final name."""
    if sf.features.ndim != 2 or sf.coords.shape != (sf.features.shape[0], 2):
        raise ValueError(f"features {sf.features.shape} and coords {sf.coords.shape} do not match")
    if dtype not in FEATURE_DTYPES:
        raise InputError(f"feature dtype {dtype!r} is not one of {FEATURE_DTYPES}")
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        fd = f.create_dataset("features", data=sf.features.astype(dtype))
        cd = f.create_dataset("coords", data=sf.coords.astype(np.int64))
        for k in COORD_ATTRS:
            v = sf.coord_attrs.get(k, math.nan)
            cd.attrs[k] = v if v is not None else math.nan
        # CLAM: the pyramid level the coords refer to; ours are always level-0 coordinates
        cd.attrs["patch_level"] = int(sf.coord_attrs.get("patch_level", 0))
        # TRIDENT: non-overlapping grid, slide name on both datasets
        cd.attrs["overlap"] = int(sf.coord_attrs.get("overlap", 0))
        cd.attrs["name"] = sf.slide_id
        fd.attrs["name"] = sf.slide_id
        fd.attrs["encoder"] = sf.encoder
        fd.attrs["encoder_hash"] = sf.extractor_hash
        f.attrs["slide_id"] = sf.slide_id
        f.attrs["stain"] = sf.stain
        f.attrs["cscl_version"] = __version__
        f.attrs["extractor_hash"] = sf.extractor_hash
        for k, v in sf.extra.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, dict | list) else v
    return path


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_features(path: str | Path | BinaryIO, name: str | None = None) -> SlideFeatures:
    """Read a feature file, or an open binary file object (an upload held in memory: no temp
    file); `name` stands for a file object in messages and as the default slide id."""
    source = path if hasattr(path, "read") else Path(path)
    path = Path(name or "upload.h5") if hasattr(path, "read") else source
    try:
        with h5py.File(source, "r") as f:
            if "features" not in f or "coords" not in f:
                raise InputError(
                    f"{path} is not a cscl feature file: no 'features'/'coords' datasets"
                )
            feats = f["features"][:]
            coords = f["coords"][:]
            cattrs = {k: _attr(v) for k, v in f["coords"].attrs.items()}
            root = {k: _attr(v) for k, v in f.attrs.items()}
            enc = _attr(f["features"].attrs.get("encoder", "unknown"))
    except OSError as exc:
        broken = "truncated" in str(exc) or (path.is_file() and path.stat().st_size == 0)
        raise InputError(
            f"cannot read feature file {path}: " + ("truncated or empty" if broken else str(exc)),
            hint=f"re-run `cscl extract` for slide {path.stem} (the file was cut short)"
            if broken
            else "is it an HDF5 feature file written by `cscl extract`?",
        ) from exc
    bad = ~np.isfinite(feats).all(axis=1) if feats.ndim == 2 else np.zeros(0, bool)
    if bad.any():
        raise InputError(
            f"feature file {path}: dataset 'features' has non-finite values (NaN/inf) in "
            f"{int(bad.sum())} of {len(bad)} patches (first: patch {int(np.flatnonzero(bad)[0])})",
            hint=f"re-run `cscl extract` for slide {path.stem}",
        )
    known = {"slide_id", "stain", "cscl_version", "extractor_hash"}
    return SlideFeatures(
        features=feats,
        coords=coords.astype(np.int64),
        slide_id=str(root.get("slide_id", path.stem)),
        stain=str(root.get("stain", "HE")),
        extractor_hash=str(root.get("extractor_hash", "")),
        encoder=str(enc),
        coord_attrs=cattrs,
        extra={k: v for k, v in root.items() if k not in known},
    )


def read_reuse_key(path: str | Path) -> tuple[str | None, str | None]:
    """(extractor hash, slide source) of an existing complete file, or (None, None).

    `source` (`<bytes>:<ETag or mtime tag>` of the slide it came from) is absent in files written
    before it existed; those are reused on their extractor hash alone."""
    try:
        with h5py.File(path, "r") as f:
            if "features" not in f:
                return None, None
            src = f.attrs.get("source")
            return str(_attr(f.attrs.get("extractor_hash"))), (
                None if src is None else str(_attr(src))
            )
    except (OSError, KeyError):
        return None, None
