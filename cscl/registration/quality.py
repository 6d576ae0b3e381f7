"""How good is a registration: mask overlap, architecture correlation, landmark errors.

`score` is the Dice of the tissue masks after warping — available for every real pair. Overlap
alone cannot tell a wrong slide: two roundish pieces of tissue of different cases still overlap
~0.9 after the best fit, and a correct real pair can overlap less (torn or partial sections).
So the hematoxylin architecture inside the overlap must also correlate (`texture_ncc`: every
stain has a hematoxylin counterstain; compared at the scale of a few cells, because serial
sections do not share single nuclei): 0.67–0.99 for true pairs, below 0.25 for another case's
or another tissue's slide (calibration in docs/METHOD-NOTES.md). Errors: with a synthetic cohort
the true transform gives `error_um`; with expert landmarks (ANHIR layout) `rtre` gives the
relative target registration error, the figure registration challenges report.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from cscl.errors import InputError
from cscl.io import storage
from cscl.registration.io import apply_affine
from cscl.registration.nonrigid import (
    STRUCTURE_SIGMA_UM,
    common_tissue,
    pair_structure,
    sample_ihc,
    structure_ncc,
)
from cscl.registration.transform import map_points

# Calibrated on real and synthetic pairs (docs/METHOD-NOTES.md "Registration QC"): true pairs
# Dice 0.91–0.996, texture 0.67–0.99; wrong pairs (another case / another tissue) texture
# −0.14–0.24, Dice anything from 0.07 to 0.94 — overlap only catches gross failures.
DEFAULT_MIN_SCORE = 0.4
DEFAULT_MIN_TEXTURE = 0.4
DEFAULT_MAX_ERROR_UM = 50.0


def texture_ncc(
    he_rgb: np.ndarray,
    he_mask: np.ndarray,
    ihc_rgb: np.ndarray,
    ihc_mask: np.ndarray,
    thumb_matrix: np.ndarray,
    thumb_mpp: float,
    flow=None,
) -> float:
    """Architecture correlation of the pair: hematoxylin of H&E vs the mapped IHC, in the tissue.

    Both hematoxylin images are equalised inside their tissue and smoothed to a few cells
    (`STRUCTURE_SIGMA_UM`): serial sections are ~4 µm apart, so single nuclei differ between
    them, but tubules, glands, vessels and cortex/medulla do not. `thumb_matrix` maps H&E
    thumbnail px → IHC thumbnail px; `flow` a `FlowResult` on top of it. NaN when the overlap is
    too small to measure.
    """
    if flow is not None:  # the flow already measured it on the same grid
        return float(flow.ncc_after)
    shape, g2t, he_img, he_m, ihc_img, grid_mpp = pair_structure(
        he_rgb, he_mask, ihc_rgb, ihc_mask, thumb_matrix, thumb_mpp
    )
    ihc_w = sample_ihc(ihc_img, thumb_matrix, g2t, shape)
    ihc_m = sample_ihc(ihc_mask.astype(np.float32), thumb_matrix, g2t, shape) >= 0.5
    return structure_ncc(
        he_img, ihc_w, common_tissue(he_m, ihc_m), max(1.0, STRUCTURE_SIGMA_UM / grid_mpp)
    )


def read_landmarks(uri: str) -> np.ndarray:
    """Landmarks (N, 2) level-0 (x, y) from an ANHIR-style CSV (`,X,Y`; row i = point i)."""
    try:
        df = pd.read_csv(io.BytesIO(storage.read_bytes(uri)))
    except Exception as exc:  # pandas raises many types for a malformed file
        raise InputError(f"cannot parse landmarks {uri}: {exc}") from exc
    cols = {str(c).strip().lower(): c for c in df.columns}
    if "x" not in cols or "y" not in cols:
        raise InputError(
            f"landmarks {uri} need columns X and Y; it has {list(df.columns)}",
            hint="ANHIR layout: `,X,Y` with one row per point, in level-0 pixels of the slide",
        )
    return df[[cols["x"], cols["y"]]].to_numpy(np.float64)


def rtre(
    mapping, he_points: np.ndarray, ihc_points: np.ndarray, ihc_size: tuple[float, float]
) -> tuple[float, float]:
    """ANHIR relative target registration error: (median, max) of |map(he) − ihc| / diagonal.

    `mapping`: a (2, 3) matrix or a `Transform`; the diagonal is the IHC (target) slide's in
    level-0 px, `ihc_size` = (width, height). Rows pair up in order; extra rows are ignored.
    """
    n = min(len(he_points), len(ihc_points))
    if n == 0:
        return math.nan, math.nan
    d = np.linalg.norm(map_points(mapping, he_points[:n]) - ihc_points[:n], axis=1)
    d = d / math.hypot(*ihc_size)
    return float(np.median(d)), float(d.max())


def tissue_points_level0(
    mask: np.ndarray, to_level0: np.ndarray, max_points: int = 4000, seed: int = 0
) -> np.ndarray:
    """Level-0 (x, y) of tissue pixel centres of a mask (a deterministic subsample)."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(seed).choice(len(pts), max_points, replace=False)]
    return apply_affine(to_level0, pts)


def landmark_error_um(
    estimated, true: np.ndarray, points_level0: np.ndarray, ihc_mpp: float
) -> float:
    """Mean distance (µm) between where the estimated map (matrix or `Transform`) and the true
    matrix send H&E tissue points."""
    matrix = getattr(estimated, "matrix", estimated)
    if len(points_level0) == 0 or not np.isfinite(matrix).all():
        return math.nan
    d = np.linalg.norm(
        map_points(estimated, points_level0) - apply_affine(true, points_level0), axis=1
    )
    return float(d.mean() * ihc_mpp)


def judge(
    score: float,
    error_um: float = math.nan,
    texture: float = math.nan,
    min_score: float = DEFAULT_MIN_SCORE,
    max_error_um: float = DEFAULT_MAX_ERROR_UM,
    min_texture: float = DEFAULT_MIN_TEXTURE,
) -> tuple[bool, str]:
    """(ok, message): usable when overlap and texture agreement are high and known error small.

    A NaN texture (overlap too small to measure) counts as failing; a NaN error (truth unknown)
    is simply not checked.
    """
    problems = []
    if not (score >= min_score):
        problems.append(f"tissue overlap {score:.3f} < {min_score:g}")
    if not (texture >= min_texture):
        problems.append(f"hematoxylin texture correlation {texture:.2f} < {min_texture:g}")
    if math.isfinite(error_um) and error_um > max_error_um:
        problems.append(f"error {error_um:.1f} µm > {max_error_um:g} µm")
    if problems:
        return False, "; ".join(problems) + " — check the overlay; wrong slide or failed fit?"
    return True, ""
