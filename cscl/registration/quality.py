"""How good is a registration: mask overlap (always) and landmark error (when the truth is known).

`score` is the Dice of the tissue masks after warping — available for every real pair. Overlap
alone cannot tell a wrong slide: two roundish pieces of tissue of different cases still overlap
~0.85–0.9 after the best rigid fit. So the hematoxylin density inside the overlap (cells are where
they are in every stain: all stains have a hematoxylin counterstain) must also correlate
(`texture_ncc`; ~0.8 for true pairs, ~0 for wrong ones on the synthetic cohort). With a
synthetic cohort the true transform is known, so the error in micrometres of mapping a grid of
tissue points is measured directly: that is the figure that decides whether location pairing of
patches (a few hundred µm wide) is trustworthy.
"""

from __future__ import annotations

import math

import numpy as np

from cscl.registration.io import apply_affine

DEFAULT_MIN_SCORE = 0.85
DEFAULT_MIN_TEXTURE = 0.25
DEFAULT_MAX_ERROR_UM = 50.0


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return 0.0 if den == 0 else float((a * b).sum()) / den


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin optical density (colour deconvolution): the counterstain common to all stains."""
    from skimage.color import rgb2hed

    return rgb2hed(rgb)[..., 0].astype(np.float32)


def texture_ncc(
    he_rgb: np.ndarray,
    he_mask: np.ndarray,
    ihc_rgb: np.ndarray,
    ihc_mask: np.ndarray,
    thumb_matrix: np.ndarray,
) -> float:
    """NCC of hematoxylin density of H&E and the warped IHC inside the (eroded) common tissue.

    `thumb_matrix` maps H&E thumbnail px → IHC thumbnail px. NaN when the overlap is too small.
    """
    from scipy import ndimage

    from cscl.registration.estimate import warp
    from cscl.registration.io import invert_affine

    inv = invert_affine(thumb_matrix)
    shape = he_mask.shape
    wm = warp(ihc_mask.astype(np.float32), inv, shape) >= 0.5
    both = ndimage.binary_erosion(wm & he_mask, iterations=2)
    if both.sum() < 50:
        return math.nan
    h_ihc = warp(hematoxylin(ihc_rgb), inv, shape)
    return _ncc(hematoxylin(he_rgb)[both], h_ihc[both])


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
    estimated: np.ndarray, true: np.ndarray, points_level0: np.ndarray, ihc_mpp: float
) -> float:
    """Mean distance (µm) between where the estimated and the true map send H&E tissue points."""
    if len(points_level0) == 0 or not np.isfinite(estimated).all():
        return math.nan
    d = np.linalg.norm(
        apply_affine(estimated, points_level0) - apply_affine(true, points_level0), axis=1
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
