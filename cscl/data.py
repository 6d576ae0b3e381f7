"""Per-case multi-stain feature sets for training and embedding (`load_cohort`).

A case = one H&E slide + any IHC slides of the same `case_id` (manifest). Rules:
- every feature file must come from ONE extractor (same `extractor_hash`); a mix is an error
  because tokens of different backbones are not comparable;
- a case without an H&E slide is skipped with a warning (`on_missing_he="skip"`, default: it
  cannot be used for pretraining nor H&E inference) or is an error (`on_missing_he="error"`);
- a missing or unreadable (truncated, not HDF5, NaN/inf) feature file is an error naming every
  such file (`on_missing_file="error"`, default) or, with `"skip"`, that slide is left out (a missing IHC slide is then masked like an absent stain;
  a missing H&E drops the case) and listed in `CohortFeatures.skipped`;
- missing IHC stains are normal: the stain is simply absent from `CaseFeatures.ihc` and masked
  in the losses.
Location pairs (H&E patch ↔ IHC patch of the same tissue) are attached with `attach_pairs`,
from a registration table (`cscl register` output or synthetic transforms.csv); rows with
ok == False are excluded with a warning.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cscl.errors import ErrorKind, InputError, StorageError
from cscl.features import feature_path, read_features
from cscl.io import storage
from cscl.io.manifest import HE, load_manifest, validate_manifest


@dataclass
class SlideTokens:
    """Patch tokens of one slide (features kept in their stored dtype to save memory)."""

    slide_id: str
    stain: str
    features: np.ndarray  # (N, D)
    coords: np.ndarray  # (N, 2) int64 level-0 top-left
    patch_size_level0: float

    @property
    def n(self) -> int:
        return int(self.features.shape[0])


@dataclass
class CaseFeatures:
    case_id: str
    he: SlideTokens
    ihc: dict[str, SlideTokens] = field(default_factory=dict)
    # stain -> (he_idx, ihc_idx) location pairs, set by CohortFeatures.attach_pairs
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class CohortFeatures:
    cases: list[CaseFeatures]
    stains: list[str]  # vocabulary, "HE" first
    dim: int
    extractor_hash: str
    encoder: str
    fingerprint: str
    skipped: list[str] = field(default_factory=list)

    @property
    def ihc_stains(self) -> list[str]:
        return [s for s in self.stains if s != HE]

    def attach_pairs(
        self,
        registrations: pd.DataFrame | None,
        mode: str = "location",
        max_dist_frac: float = 0.75,
    ) -> dict[str, int]:
        """Compute location pairs for every (case, IHC stain). Returns counts for reporting.

        mode "location": H&E centres mapped by the case's matrix, nearest IHC centre within
        `max_dist_frac` × IHC patch size (level-0). mode "identity": slides already share
        coordinates (identity matrix). Default 0.75: any point lies within ps/√2 ≈ 0.71·ps of
        the nearest centre of a regular grid, so 0.5 would lose every patch of a slide whose
        grid happens to be offset by about half a patch diagonally. Pairs missing (no registration row, ok == False) leave
        the stain without pairs: it is masked for that case.
        """
        from cscl.registration import pair_by_location, transform_of

        if mode not in ("location", "identity"):
            raise ValueError(f"unknown pairing mode {mode!r}")
        lut: dict[tuple[str, str], pd.Series] = {}
        if mode == "location":
            if registrations is None:
                raise InputError(
                    "location pairing needs a registration table",
                    hint="pass --registration registration.csv (cscl register) or transforms.csv, "
                    "or --pairing identity (pre-registered slides) / random (reference behaviour)",
                )
            for _, row in registrations.iterrows():
                lut[(str(row["case_id"]), str(row["stain"]).upper())] = row
        counts = {"pairs": 0, "no_registration": 0, "not_ok": 0, "no_overlap": 0}
        bad: list[str] = []
        for case in self.cases:
            case.pairs = {}
            for stain, sl in case.ihc.items():
                if mode == "identity":
                    m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
                else:
                    row = lut.get((case.case_id, stain))
                    if row is None:
                        counts["no_registration"] += 1
                        bad.append(f"{case.case_id}/{stain} (no row)")
                        continue
                    if not bool(row.get("ok", True)):
                        counts["not_ok"] += 1
                        bad.append(f"{case.case_id}/{stain} (ok=False)")
                        continue
                    m = transform_of(row)  # matrix + non-rigid field when registered so
                he_idx, ihc_idx = pair_by_location(
                    case.he.coords,
                    sl.coords,
                    m,
                    max_dist=max_dist_frac * sl.patch_size_level0,
                    he_patch_size_level0=case.he.patch_size_level0,
                    ihc_patch_size_level0=sl.patch_size_level0,
                )
                if len(he_idx) == 0:
                    counts["no_overlap"] += 1
                    bad.append(f"{case.case_id}/{stain} (no overlapping patches)")
                    continue
                case.pairs[stain] = (he_idx, ihc_idx)
                counts["pairs"] += int(len(he_idx))
        if bad:
            total = sum(len(c.ihc) for c in self.cases)
            none_left = (
                " — NO H&E/IHC pair is left: alignment sees no IHC (check registration.csv)"
                if len(bad) == total
                else ""
            )
            warnings.warn(
                f"{len(bad)} of {total} H&E/IHC pair(s) excluded from location pairing (stain "
                f"masked): {bad[:5]}{' …' if len(bad) > 5 else ''}{none_left}",
                stacklevel=2,
            )
        return counts


def _fingerprint(items: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for sid, eh in sorted(items):
        h.update(f"{sid}:{eh}\n".encode())
    return h.hexdigest()[:16]


def _patch_size(sf) -> float:
    v = sf.coord_attrs.get("patch_size_level0", float("nan"))
    try:
        v = float(v)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v) or v <= 0:  # fall back to the grid step of the coordinates
        xs = np.unique(sf.coords[:, 0])
        v = float(np.min(np.diff(xs))) if len(xs) > 1 else 1.0
    return v


def _resolve_file(features_dir: str, slide_id: str) -> Path | None:
    """Local path of a slide's feature file (S3: through the store's download-once cache)."""
    if storage.is_s3(features_dir):
        try:
            return storage.fetch(f"{features_dir.rstrip('/')}/{slide_id}.h5")
        except StorageError as err:
            if err.kind == ErrorKind.NOT_FOUND:
                return None
            raise
    p = feature_path(storage.local_path(features_dir), slide_id)
    return p if p.exists() else None


def load_cohort(
    features_dir: str | Path,
    manifest: str | pd.DataFrame,
    *,
    stains: list[str] | None = None,
    on_missing_he: str = "skip",
    on_missing_file: str = "error",
    he_only: bool = False,
) -> CohortFeatures:
    """Load the feature files of every slide in `manifest` grouped by case.

    `stains`: restrict to these stains (H&E always kept). `he_only`: load only H&E slides (for
    embedding). Raises `InputError` for mixed extractor hashes, missing files (default) and, with
    `on_missing_he="error"`, cases without H&E.
    """
    df = (
        validate_manifest(manifest)
        if isinstance(manifest, pd.DataFrame)
        else load_manifest(str(manifest))
    )
    if he_only:
        df = df[df["stain"] == HE]
    elif stains is not None:
        keep = {s.upper() for s in stains} | {HE}
        df = df[df["stain"].isin(keep)]
    skipped: list[str] = []
    has_he = set(df.loc[df["stain"] == HE, "case_id"])
    no_he = sorted(set(df["case_id"]) - has_he)
    if no_he:
        msg = f"{len(no_he)} case(s) have no H&E slide: {no_he[:5]}"
        if on_missing_he == "error":
            raise InputError(msg, hint="add the H&E slide to the manifest or remove the case")
        warnings.warn(msg + " — skipped (an H&E slide is needed)", stacklevel=2)
        skipped += [f"{c} (no H&E slide)" for c in no_he]
        df = df[df["case_id"].isin(has_he)]
    fdir = str(features_dir)
    loaded: dict[str, object] = {}
    missing: list[str] = []
    unreadable: dict[str, str] = {}  # slide id → why (truncated, not HDF5, non-finite values)
    for sid in df["slide_id"]:
        path = _resolve_file(fdir, sid)
        if path is None:
            missing.append(sid)
            continue
        try:
            loaded[sid] = read_features(path)
        except InputError as err:  # every bad file is listed, not only the first
            unreadable[sid] = str(err)
    if missing or unreadable:
        problems = [f"{m}.h5 (missing)" for m in missing] + [
            f"{sid}.h5 ({why})" for sid, why in unreadable.items()
        ]
        if on_missing_file == "error":
            raise InputError(
                f"{len(problems)} feature file(s) missing or unreadable under {fdir}: "
                f"{problems[:5]}{' …' if len(problems) > 5 else ''}",
                hint="run `cscl extract` for these slides, or drop them from the manifest",
            )
        warnings.warn(
            f"{len(problems)} feature file(s) missing or unreadable, skipped: {problems[:5]}",
            stacklevel=2,
        )
        skipped += [f"{m} (no feature file)" for m in missing]
        skipped += [f"{sid} (unreadable feature file: {why})" for sid, why in unreadable.items()]
    hashes: dict[str, list[str]] = {}
    for sid, sf in loaded.items():
        hashes.setdefault(sf.extractor_hash, []).append(sid)
    if len(hashes) > 1:
        desc = {h or "<empty>": f"{len(v)} file(s), e.g. {v[0]}.h5" for h, v in hashes.items()}
        raise InputError(
            f"feature files under {fdir} come from {len(hashes)} different extractors: {desc}",
            hint="re-extract all slides with one backbone/config (one extractor hash per run)",
        )
    if not loaded:
        raise InputError(
            f"no usable feature files under {fdir} for manifest {manifest!s:.200}",
            hint=f"skipped: {skipped[:5]}" if skipped else "run `cscl extract` first",
        )
    dims = {sf.dim for sf in loaded.values()}
    if len(dims) > 1:
        raise InputError(f"feature files under {fdir} have different dimensions {sorted(dims)}")
    cases: list[CaseFeatures] = []
    for cid, g in df.groupby("case_id", sort=True):
        he_rows = g[g["stain"] == HE]
        he_sid = he_rows["slide_id"].iloc[0]
        if he_sid not in loaded:  # already listed in `skipped` with its reason
            continue

        def tok(sid: str, stain: str) -> SlideTokens:
            sf = loaded[sid]
            return SlideTokens(sid, stain, sf.features, sf.coords, _patch_size(sf))

        case = CaseFeatures(str(cid), tok(he_sid, HE))
        for _, r in g[g["stain"] != HE].sort_values("stain").iterrows():
            if r["slide_id"] in loaded:
                case.ihc[r["stain"]] = tok(r["slide_id"], r["stain"])
        if case.he.n == 0:
            skipped.append(f"{cid} (H&E slide has no patches)")
            continue
        cases.append(case)
    if not cases:
        raise InputError(f"no usable case in {manifest!s:.200}", hint=f"skipped: {skipped[:5]}")
    ihc = sorted({s for c in cases for s in c.ihc})
    any_sf = next(iter(loaded.values()))
    return CohortFeatures(
        cases=cases,
        stains=[HE, *ihc],
        dim=dims.pop(),
        extractor_hash=next(iter(hashes)),
        encoder=any_sf.encoder,
        fingerprint=_fingerprint([(sid, sf.extractor_hash) for sid, sf in loaded.items()]),
        skipped=skipped,
    )
