"""Feature files from TRIDENT and CLAM in, CLAM `pt_files` out.

TRIDENT (github.com/mahmoodlab/TRIDENT) writes `<job>/<mag>x_<px>px_<overlap>px_overlap/
features_<encoder>/<slide>.h5`: datasets `features` (N, D) and `coords` (N, 2) level-0, coords
attrs `patch_size` (px at the target magnification), `patch_size_level0`, `level0_magnification`,
`target_magnification`, `level0_width`, `level0_height`, `overlap`, `name` — but no extractor
identity. CLAM (github.com/mahmoodlab/CLAM) writes `h5_files/<slide>.h5` (`features`, `coords`,
often without attrs) and `pt_files/<slide>.pt` (the features tensor alone).

`import_features` turns such a folder into cscl feature files (docs/CONTRACTS.md) with an
extractor identity derived from what decides the features — source, encoder, feature dim, target
resolution, patch size — so training records it and `cscl package` / serving accept the files.
What a folder does not say (CLAM: encoder, resolution, patch size) must be given; it is never
guessed. Imported features cannot be recomputed from slides by cscl, so their models are packaged
for feature-file input (`cscl package --features-only`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from cscl.errors import InputError
from cscl.features import SlideFeatures, feature_path, read_features, write_features
from cscl.io.storage import atomic_path

SOURCES = ("trident", "clam")
MAG_TO_MPP = 10.0  # the convention TRIDENT and CLAM use: 20× ↔ 0.5 µm/px, 40× ↔ 0.25 µm/px
_TRIDENT_DIR = re.compile(r"^features_(.+)$")


@dataclass
class ImportSummary:
    out_dir: str
    extractor_hash: str
    encoder: str
    source: str
    identity: dict
    slides: list[str] = field(default_factory=list)


def _attrs(ds) -> dict:
    out = {}
    for k, v in ds.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def detect_source(files: list[Path]) -> str:
    """ "trident" when the coords carry TRIDENT's geometry attrs, else "clam"."""
    with h5py.File(files[0], "r") as f:
        attrs = _attrs(f["coords"]) if "coords" in f else {}
    return "trident" if {"patch_size_level0", "target_magnification"} <= set(attrs) else "clam"


def _encoder_from_path(folder: Path) -> str | None:
    m = _TRIDENT_DIR.match(folder.name)
    return m.group(1) if m else None


def _geometry(attrs: dict, target_mpp: float | None, patch_size: int | None, where: Path) -> dict:
    """The coords attrs of a cscl file from a foreign file's attrs and the user's flags."""
    ps = patch_size or (int(attrs["patch_size"]) if _finite(attrs.get("patch_size")) else None)
    mag = _finite(attrs.get("target_magnification"))
    mpp = target_mpp or (MAG_TO_MPP / mag if mag else None)
    if ps is None or mpp is None:
        raise InputError(
            f"{where} does not say its patch size and resolution",
            hint="pass --patch-size PX and --target-mpp MPP (the settings the features were "
            "extracted with)",
        )
    ps0 = _finite(attrs.get("patch_size_level0"))
    mag0 = _finite(attrs.get("level0_magnification"))
    mpp0 = MAG_TO_MPP / mag0 if mag0 else (mpp * ps / ps0 if ps0 else None)
    if not ps0:  # unknown without the level-0 resolution: 0 says "unknown" (serving shows None)
        ps0 = round(ps * mpp / mpp0) if mpp0 else 0
    return {
        "patch_size": int(ps),
        "patch_size_level0": int(ps0),
        "level0_magnification": mag0 if mag0 else math.nan,
        "target_magnification": mag if mag else MAG_TO_MPP / mpp,
        "level0_width": _finite(attrs.get("level0_width")) or math.nan,
        "level0_height": _finite(attrs.get("level0_height")) or math.nan,
        "mpp_level0": mpp0 if mpp0 else math.nan,
        "target_mpp": float(mpp),
        "patch_level": int(attrs.get("patch_level", 0)),
        "overlap": int(_finite(attrs.get("overlap")) or 0),
    }


def imported_hash(identity: dict) -> str:
    """16 hex digits, the format of cscl's own extractor hashes; "imported" keeps them apart."""
    blob = json.dumps({"v": 1, "imported": identity}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def import_features(
    src: str | Path,
    out_dir: str | Path,
    *,
    source: str = "auto",
    encoder: str | None = None,
    target_mpp: float | None = None,
    patch_size: int | None = None,
    stain: str = "HE",
    weights: str | None = None,
) -> ImportSummary:
    """Every `<slide>.h5` of a TRIDENT `features_<enc>/` or CLAM `h5_files/` folder → cscl files.

    One identity for the folder: all files must agree on it (dimension, geometry), else nothing is
    written. `weights` (a digest or a name of the weights used) enters the identity when given.
    """
    src = Path(src)
    files = sorted(src.glob("*.h5")) if src.is_dir() else []
    if not files:
        hint = "give the h5_files/ folder next to it" if list(src.glob("*.pt")) else None
        raise InputError(f"no .h5 feature files in {src}", hint=hint or "check the folder")
    source = detect_source(files) if source == "auto" else source
    if source not in SOURCES:
        raise InputError(f"unknown --source {source!r}", hint=f"one of {SOURCES} or auto")
    encoder = encoder or (_encoder_from_path(src) if source == "trident" else None)
    if not encoder:
        raise InputError(
            f"{src}: the {source} files do not name their patch encoder",
            hint="pass --encoder NAME (e.g. uni_v1, conch_v15: the encoder the features came from)",
        )
    loaded: list[tuple[str, np.ndarray, np.ndarray, dict]] = []
    identity: dict | None = None
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                if "features" not in h or "coords" not in h:
                    raise InputError(f"{f} has no 'features'/'coords' datasets")
                feats = np.asarray(h["features"][:], dtype=np.float32)
                coords = np.asarray(h["coords"][:])
                attrs = _attrs(h["coords"])
        except OSError as exc:
            raise InputError(f"cannot read {f}: {exc}", hint="is it an HDF5 file?") from exc
        if feats.ndim == 3 and feats.shape[0] == 1:  # some writers keep a batch axis
            feats = feats[0]
        coords = coords.reshape(-1, 2).astype(np.int64)
        if feats.ndim != 2 or len(feats) != len(coords):
            raise InputError(f"{f}: features {feats.shape} do not match coords {coords.shape}")
        geo = _geometry(attrs, target_mpp, patch_size, f)
        ident = {
            "source": source,
            "encoder": encoder,
            "dim": int(feats.shape[1]),
            "target_mpp": round(geo["target_mpp"], 6),
            "patch_size": geo["patch_size"],
            "overlap": geo["overlap"],
            **({"weights": str(weights)} if weights else {}),
        }
        if identity is None:
            identity = ident
        elif ident != identity:
            diff = {
                k: (identity.get(k), ident.get(k)) for k in ident if ident[k] != identity.get(k)
            }
            raise InputError(
                f"{f} was extracted differently from {files[0].name}: {diff}",
                hint="import each extraction setting from its own folder",
            )
        loaded.append((f.stem, feats, coords, geo))
    assert identity is not None
    ehash = imported_hash(identity)
    out = Path(out_dir)
    for sid, feats, coords, geo in loaded:
        sf = SlideFeatures(
            features=feats,
            coords=coords,
            slide_id=sid,
            stain=stain,
            extractor_hash=ehash,
            encoder=encoder,
            coord_attrs=geo,
            extra={"random_init": False, "imported_from": json.dumps(identity, sort_keys=True)},
        )
        write_features(feature_path(out, sid), sf, dtype="float32")
    return ImportSummary(str(out), ehash, encoder, source, identity, [s for s, *_ in loaded])


def export_clam(features_dir: str | Path, out_dir: str | Path) -> list[str]:
    """cscl feature files → CLAM's layout: `pt_files/<slide>.pt` (float32 tensor (N, D), what
    CLAM's training loads) and `h5_files/<slide>.h5` (the same file, float32)."""
    files = sorted(Path(features_dir).glob("*.h5"))
    if not files:
        raise InputError(f"no feature files in {features_dir}")
    out = Path(out_dir)
    done = []
    for f in files:
        sf = read_features(f)
        with atomic_path(out / "pt_files" / f"{sf.slide_id}.pt") as tmp:
            torch.save(torch.from_numpy(np.ascontiguousarray(sf.features, dtype=np.float32)), tmp)
        write_features(out / "h5_files" / f"{sf.slide_id}.h5", sf, dtype="float32")
        done.append(sf.slide_id)
    return done
