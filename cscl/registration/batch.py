"""Register every IHC slide of a manifest to its case's H&E slide (`cscl register`).

Writes `<out>/registration.csv` (docs/CONTRACTS.md "Registration output"), one overlay PNG per
pair and `registration.json` (parameters + per-pair details such as the texture correlation).
Every IHC row of the manifest gets a row: failures are flagged with ok=False and a message.
The CSV is rewritten after each pair, so an interrupted run resumes where it stopped (pairs
already estimated with the same parameters are reused; failed ones are retried).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from cscl.errors import CsclError, InputError
from cscl.io import storage
from cscl.io.manifest import HE, load_manifest
from cscl.registration.io import (
    MATRIX_COLUMNS,
    REGISTRATION_COLUMNS,
    load_registrations,
    matrix_of,
    write_registrations,
)
from cscl.registration.overlay import failure_png, overlay_png
from cscl.registration.quality import (
    DEFAULT_MAX_ERROR_UM,
    DEFAULT_MIN_SCORE,
    DEFAULT_MIN_TEXTURE,
    judge,
    landmark_error_um,
    read_landmarks,
    rtre,
    tissue_points_level0,
)
from cscl.registration.register import (
    DEFAULT_THUMB_MPP,
    Registration,
    SlideThumb,
    read_thumb,
    register_thumbs,
)
from cscl.registration.transform import save_field


@dataclass(frozen=True)
class RegisterParams:
    """Everything that changes the result; a rerun reuses rows only when these are equal."""

    thumb_mpp: float = DEFAULT_THUMB_MPP
    affine: bool = False
    allow_flip: bool = False
    min_score: float = DEFAULT_MIN_SCORE
    min_texture: float = DEFAULT_MIN_TEXTURE
    max_error_um: float = DEFAULT_MAX_ERROR_UM
    nonrigid: bool = True
    landmarks: str = ""  # folder of <slide_id>.csv landmarks (the manifest may name them too)


def _join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


def default_transforms(manifest_uri: str) -> str | None:
    """`transforms.csv` beside the manifest (synthetic cohorts), if there is one."""
    cand = storage.resolve_relative("transforms.csv", str(manifest_uri))
    return cand if storage.exists(cand) else None


def _row(case_id, stain, he_id, ihc_id, reg: Registration, error_um: float) -> dict:
    m = np.asarray(reg.matrix, dtype=float).ravel()
    row = {"case_id": case_id, "stain": stain, "he_slide_id": he_id, "ihc_slide_id": ihc_id}
    row.update({c: float(v) for c, v in zip(MATRIX_COLUMNS, m, strict=True)})
    row.update(score=float(reg.score), ok=bool(reg.ok), error_um=error_um, message=reg.message)
    row.update(texture=float(reg.texture), field_uri="", n_landmarks=0)
    row.update({c: math.nan for c in RTRE_COLUMNS})
    return row


RTRE_COLUMNS = ("rtre_before_median", "rtre_before_max", "rtre_median", "rtre_max")


def _failed_row(case_id, stain, he_id, ihc_id, message: str) -> dict:
    return _row(case_id, stain, he_id, ihc_id, Registration.failed(message), math.nan)


def summarize(df: pd.DataFrame) -> dict:
    """Counts and error figures of a registration table, for the CLI and for reports."""
    est = df[list(MATRIX_COLUMNS)].notna().all(axis=1)
    err = pd.to_numeric(df["error_um"], errors="coerce").dropna()
    return {
        "n_pairs": int(len(df)),
        "n_ok": int(df["ok"].sum()),
        "n_flagged": int((~df["ok"] & est).sum()),
        "n_failed": int((~est).sum()),
        "median_score": float(df.loc[est, "score"].median()) if est.any() else math.nan,
        "median_error_um": float(err.median()) if len(err) else math.nan,
        "max_error_um": float(err.max()) if len(err) else math.nan,
        **_rtre_summary(df),
    }


def _rtre_summary(df: pd.DataFrame) -> dict:
    """Median over pairs of each pair's median rTRE, and the worst landmark, before and after."""
    out = {}
    for c in RTRE_COLUMNS:
        v = pd.to_numeric(df[c], errors="coerce").dropna() if c in df.columns else pd.Series([])
        agg = v.max() if c.endswith("_max") else v.median()
        out[c] = float(agg) if len(v) else math.nan
    out["n_pairs_with_landmarks"] = (
        int((pd.to_numeric(df["n_landmarks"], errors="coerce").fillna(0) > 0).sum())
        if "n_landmarks" in df.columns
        else 0
    )
    return out


def landmarks_uri(row: dict, manifest_uri: str, landmarks_dir: str) -> str | None:
    """Where a slide's landmarks are: manifest column `landmarks_uri`, else `<dir>/<slide_id>.csv`."""
    v = row.get("landmarks_uri")
    if isinstance(v, str) and v.strip():
        return storage.resolve_relative(v.strip(), str(manifest_uri))
    if landmarks_dir:
        cand = _join(landmarks_dir, f"{row['slide_id']}.csv")
        return cand if storage.exists(cand) else None
    return None


def _previous(out_dir: str, params: RegisterParams) -> tuple[dict, dict]:
    """Rows (and details) of an earlier run with the same parameters, keyed by (case, stain)."""
    csv, js = _join(out_dir, "registration.csv"), _join(out_dir, "registration.json")
    try:
        if not (storage.exists(csv) and storage.exists(js)):
            return {}, {}
        meta = json.loads(storage.read_bytes(js))
        if meta.get("params") != asdict(params):
            return {}, {}
        df = load_registrations(csv, resolve_fields=False)  # rows are written back as they are
    except (CsclError, ValueError):
        return {}, {}
    rows = {}
    for r in df.to_dict("records"):
        if all(np.isfinite(r[c]) for c in MATRIX_COLUMNS):
            rows[(r["case_id"], r["stain"])] = r
    return rows, meta.get("pairs", {})


def register_manifest(
    manifest_uri: str,
    out_dir: str,
    transforms_path: str | None = None,
    *,
    params: RegisterParams | None = None,
    overlays: bool = True,
    progress: bool = True,
    resume: bool = True,
) -> pd.DataFrame:
    """Register each IHC slide to its case's H&E slide; returns the registration table.

    `transforms_path`: the true transforms (synthetic cohorts) for `error_um`; default: a
    `transforms.csv` beside the manifest when present. Raises only for a bad manifest/transforms
    table; per-slide problems become flagged rows.
    """
    params = params or RegisterParams()
    manifest = load_manifest(manifest_uri)
    if transforms_path is None:
        transforms_path = default_transforms(manifest_uri)
    truth = {}
    if transforms_path is not None:
        for r in load_registrations(transforms_path).to_dict("records"):
            truth[(r["case_id"], r["stain"])] = matrix_of(r)
    prev_rows, prev_pairs = _previous(out_dir, params) if resume else ({}, {})

    he_records = {r["case_id"]: r for r in manifest[manifest["stain"] == HE].to_dict("records")}
    he_rows = manifest[manifest["stain"] == HE].set_index("case_id")
    ihc_rows = manifest[manifest["stain"] != HE].sort_values(["case_id", "stain"])
    dup = ihc_rows.duplicated(["case_id", "stain"], keep=False)
    if dup.any():
        raise InputError(
            f"{manifest_uri}: several slides of one stain in a case: "
            f"{ihc_rows.loc[dup, 'slide_id'].tolist()[:6]}",
            hint="registration tables are keyed by (case_id, stain): keep one slide per stain "
            "per case, or give the extra section its own stain name (e.g. HER2_2)",
        )
    rows: list[dict] = []
    details: dict[str, dict] = {}
    he_cache: dict[str, SlideThumb | str] = {}

    def save() -> None:
        df = pd.DataFrame(rows, columns=list(REGISTRATION_COLUMNS))
        write_registrations(_join(out_dir, "registration.csv"), df)
        meta = {
            "params": asdict(params),
            "manifest": str(manifest_uri),
            "transforms": transforms_path,
            "pairs": details,
        }
        storage.write_bytes(
            _join(out_dir, "registration.json"),
            json.dumps(meta, indent=1, default=float).encode(),
        )

    def he_thumb(case_id: str) -> SlideThumb | str:
        if case_id not in he_cache:
            he = he_rows.loc[case_id]
            try:
                he_cache[case_id] = read_thumb(
                    he["slide_uri"], _mpp(he), params.thumb_mpp, he["slide_id"]
                )
            except CsclError as exc:
                he_cache[case_id] = f"H&E slide unusable: {exc}"
        return he_cache[case_id]

    from rich.progress import Progress

    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task("registering", total=len(ihc_rows))
        for ihc in ihc_rows.to_dict("records"):
            case_id, stain, ihc_id = ihc["case_id"], ihc["stain"], ihc["slide_id"]
            key = f"{case_id}_{stain}"
            bar.update(task, description=f"registering {key}")
            he_id = str(he_rows.loc[case_id, "slide_id"]) if case_id in he_rows.index else ""
            old = prev_rows.get((case_id, stain))
            png = _join(out_dir, "overlays", f"{key}.png")
            if (
                old is not None
                and old["he_slide_id"] == he_id
                and old["ihc_slide_id"] == ihc_id
                and (not overlays or storage.exists(png))
            ):
                rows.append({c: old.get(c) for c in REGISTRATION_COLUMNS})
                details[key] = prev_pairs.get(key, {})
                bar.advance(task)
                continue
            t0 = time.perf_counter()
            lm = None
            if he_id:
                lm_he = landmarks_uri(he_records[case_id], manifest_uri, params.landmarks)
                lm_ihc = landmarks_uri(ihc, manifest_uri, params.landmarks)
                lm = (lm_he, lm_ihc) if lm_he and lm_ihc else None
            row, he_img = _register_one(
                ihc, he_id, he_thumb if he_id else None, truth, params, out_dir, lm
            )
            rows.append(row)
            details[key] = {"seconds": round(time.perf_counter() - t0, 2), **row.pop("_details")}
            if overlays:
                tex = details[key].get("texture_ncc", math.nan)
                err = (
                    f"rTRE {row['rtre_before_median']:.4f} → {row['rtre_median']:.4f}"
                    if row["n_landmarks"]
                    else f"error {row['error_um']:.1f} µm"
                )
                title = (
                    f"{key}: overlap {row['score']:.3f}, texture {tex:.2f}, {err} — "
                    f"{'OK' if row['ok'] else 'FLAGGED'} (affine part shown)"
                )
                data = (
                    overlay_png(*he_img, title=title)
                    if isinstance(he_img, tuple)
                    else failure_png(he_img, title=key, message=row["message"])
                )
                storage.write_bytes(png, data)
            save()
            bar.advance(task)
    save()
    return pd.DataFrame(rows, columns=list(REGISTRATION_COLUMNS))


def landmark_rtre(mapping, landmarks: tuple[str, str], ihc_size: tuple[int, int]) -> dict:
    """rTRE columns of one pair: identity (landmarks as given) and the estimated map."""
    he_pts, ihc_pts = read_landmarks(landmarks[0]), read_landmarks(landmarks[1])
    before = rtre(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), he_pts, ihc_pts, ihc_size)
    after = rtre(mapping, he_pts, ihc_pts, ihc_size)
    return dict(zip(RTRE_COLUMNS, (*before, *after), strict=True)) | {
        "n_landmarks": int(min(len(he_pts), len(ihc_pts)))
    }


def _mpp(row: dict | pd.Series) -> float | None:
    v = row.get("mpp")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _register_one(
    ihc: dict,
    he_id: str,
    he_thumb,
    truth: dict,
    params: RegisterParams,
    out_dir: str = "",
    landmarks: tuple[str, str] | None = None,
):
    """One pair → (row with `_details`, overlay inputs or the H&E thumbnail for a failure).

    A non-rigid field is written to `<out_dir>/fields/<case>_<stain>.npz` (row `field_uri`,
    relative); `landmarks` (H&E csv, IHC csv) add the ANHIR rTRE before/after.
    """
    case_id, stain, ihc_id = ihc["case_id"], ihc["stain"], ihc["slide_id"]
    if he_thumb is None:
        row = _failed_row(
            case_id, stain, he_id, ihc_id, f"case {case_id} has no H&E slide in the manifest"
        )
        row["_details"] = {}
        return row, None
    he = he_thumb(case_id)
    if isinstance(he, str):
        row = _failed_row(case_id, stain, he_id, ihc_id, he)
        row["_details"] = {}
        return row, None
    try:
        ihc_t = read_thumb(ihc["slide_uri"], _mpp(ihc), params.thumb_mpp, ihc_id)
        reg = register_thumbs(
            he,
            ihc_t,
            affine=params.affine,
            allow_flip=params.allow_flip,
            nonrigid=params.nonrigid,
            min_score=params.min_score,
            min_texture=params.min_texture,
        )
    except CsclError as exc:
        row = _failed_row(case_id, stain, he_id, ihc_id, f"IHC slide unusable: {exc}")
        row["_details"] = {}
        return row, he.rgb
    except Exception as exc:  # a numerical failure in one pair must not stop the batch
        row = _failed_row(
            case_id, stain, he_id, ihc_id, f"registration crashed: {type(exc).__name__}: {exc}"
        )
        row["_details"] = {}
        return row, he.rgb
    error = math.nan
    true = truth.get((case_id, stain))
    if true is not None and np.isfinite(reg.matrix).all():
        pts = tissue_points_level0(he.mask, he.to_level0)
        error = landmark_error_um(reg.transform, true, pts, ihc_t.mpp)
    if np.isfinite(reg.matrix).all():
        reg.ok, reg.message = judge(
            reg.score, error, reg.texture, params.min_score, params.max_error_um, params.min_texture
        )
    row = _row(case_id, stain, he_id, ihc_id, reg, error)
    if reg.field is not None and out_dir:
        rel = f"fields/{case_id}_{stain}.npz"
        save_field(_join(out_dir, rel), reg.field)
        row["field_uri"] = rel
    if landmarks is not None and np.isfinite(reg.matrix).all():
        row.update(landmark_rtre(reg.transform, landmarks, ihc_t.size0))
    row["_details"] = {"texture_ncc": reg.texture, "angle_deg": reg.angle_deg, **reg.steps}
    if reg.thumb_matrix is None:
        return row, he.rgb
    return row, (he.rgb, he.mask, ihc_t.rgb, ihc_t.mask, reg.thumb_matrix)
