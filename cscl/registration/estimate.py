"""Rigid (optionally affine) H&E → IHC registration on low-resolution tissue masks.

Why masks: H&E and IHC share tissue *shape* but not colour, so the outline of the tissue (and its
holes) is the signal both stains agree on. Steps, all in thumbnail pixels of one common µm/px:
1. coarse search: for every angle of a full 360° sweep (so the 180° ambiguity of elongated tissue
   is tested, not assumed), the best translation is the peak of an FFT cross-correlation of the
   two masks, which is exactly the overlap — no local optimum in translation;
2. refinement of the best few candidates with Powell on the normalised cross-correlation of
   blurred masks (sub-pixel), rigid first, affine optionally;
3. the winner is the candidate with the highest Dice of the binary masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, signal

from cscl.registration.io import compose_affine, invert_affine


@dataclass
class Estimate:
    """Result in thumbnail pixel space: `matrix` maps moving (H&E) px (x, y) → fixed (IHC) px."""

    matrix: np.ndarray  # (2, 3)
    dice: float
    angle_deg: float
    flipped: bool = False  # the IHC section lies mirrored (only with allow_flip=True)
    rigid_matrix: np.ndarray | None = None  # the rigid fit an affine one started from


def rotation(angle_deg: float, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(2, 3) rotation [[cos, -sin], [sin, cos]] by `angle_deg` about `centre` (x, y)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    cx, cy = centre
    return np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]])


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]])


def warp(image: np.ndarray, matrix: np.ndarray, out_shape: tuple[int, int], order: int = 1):
    """Resample `image` so that input pixel (x, y) lands at `matrix @ (x, y, 1)` in the output."""
    inv = invert_affine(matrix)  # output (x, y) → input (x, y)
    lin = inv[:, :2][::-1, ::-1]  # the same map in (row, col) order for ndimage
    off = inv[:, 2][::-1]
    return ndimage.affine_transform(
        np.asarray(image, dtype=np.float32),
        lin,
        offset=off,
        output_shape=tuple(out_shape),
        order=order,
        cval=0.0,
        prefilter=False,
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    tot = int(a.sum()) + int(b.sum())
    return 0.0 if tot == 0 else 2.0 * float((a & b).sum()) / tot


def warped_dice(moving: np.ndarray, fixed: np.ndarray, matrix: np.ndarray) -> float:
    """Dice of the moving mask warped into the fixed frame and the fixed mask."""
    w = warp(moving.astype(np.float32), matrix, fixed.shape, order=1) >= 0.5
    return dice(w, fixed)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def _downscale(mask: np.ndarray, k: int) -> np.ndarray:
    """Block mean by an integer factor; pixel centre c ↔ finer pixel k·c + (k−1)/2."""
    if k <= 1:
        return mask.astype(np.float32)
    h, w = mask.shape
    H, W = -(-h // k) * k, -(-w // k) * k
    pad = np.zeros((H, W), dtype=np.float32)
    pad[:h, :w] = mask
    return pad.reshape(H // k, k, W // k, k).mean(axis=(1, 3))


def _coarse_to_fine(matrix: np.ndarray, k: int) -> np.ndarray:
    """A map between coarse grids (factor k) expressed between the fine grids."""
    up = np.array([[k, 0.0, (k - 1) / 2.0], [0.0, k, (k - 1) / 2.0]])
    return compose_affine(up, compose_affine(matrix, invert_affine(up)))


def angle_sweep(
    moving: np.ndarray, fixed: np.ndarray, step_deg: float = 3.0
) -> list[tuple[float, float, np.ndarray]]:
    """(overlap-dice, angle, matrix) for each angle; translation = cross-correlation peak."""
    m = moving.astype(np.float32)
    f = fixed.astype(np.float32)
    cm = _centroid(moving > 0.5)
    size = int(math.ceil(math.hypot(*m.shape))) + 2
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    f_sum = float(f.sum())
    out = []
    for ang in np.arange(0.0, 360.0, step_deg):
        # rotate about the moving centroid and put that centroid at the canvas centre
        a = compose_affine(translation(centre[0] - cm[0], centre[1] - cm[1]), rotation(ang, cm))
        rot = warp(m, a, (size, size), order=1)
        corr = signal.fftconvolve(f, rot[::-1, ::-1], mode="full")
        i, j = np.unravel_index(int(np.argmax(corr)), corr.shape)
        shift = (j - (size - 1), i - (size - 1))
        score = 2.0 * float(corr[i, j]) / max(f_sum + float(rot.sum()), 1e-9)
        out.append((score, float(ang), compose_affine(translation(*shift), a)))
    return out


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return 0.0 if den == 0 else float((a * b).sum()) / den


def refine(
    moving: np.ndarray,
    fixed: np.ndarray,
    init: np.ndarray,
    *,
    affine: bool = False,
    sigma: float = 2.0,
) -> np.ndarray:
    """Polish `init` by maximising NCC of blurred masks (smooth objective → sub-pixel result).

    Rigid parameters are (angle, tx, ty) about the moving centroid, so angle and translation do
    not trade off against each other; the affine stage adds 4 linear terms on top of the rigid one.
    """
    ms = ndimage.gaussian_filter(moving.astype(np.float32), sigma)
    fs = ndimage.gaussian_filter(fixed.astype(np.float32), sigma)
    cm = _centroid(moving > 0.5)

    def rigid(p):
        return compose_affine(compose_affine(translation(p[1], p[2]), init), rotation(p[0], cm))

    def cost_rigid(p):
        return -_ncc(warp(ms, rigid(p), fs.shape), fs)

    res = optimize.minimize(
        cost_rigid,
        np.zeros(3),
        method="Powell",
        options={"xtol": 1e-3, "ftol": 1e-7, "maxfev": 600},
    )
    best = rigid(res.x)
    if not affine:
        return best

    def full(p):
        lin = np.array([[1 + p[0], p[1], 0.0], [p[2], 1 + p[3], 0.0]])
        about = compose_affine(translation(*cm), compose_affine(lin, translation(-cm[0], -cm[1])))
        return compose_affine(compose_affine(translation(p[4], p[5]), best), about)

    def cost_aff(p):
        return -_ncc(warp(ms, full(p), fs.shape), fs)

    res2 = optimize.minimize(
        cost_aff,
        np.zeros(6),
        method="Powell",
        options={"xtol": 1e-3, "ftol": 1e-7, "maxfev": 900},
    )
    return full(res2.x) if res2.fun <= res.fun else best


def _level(mask: np.ndarray, other: np.ndarray, max_px: int) -> int:
    """Integer downscale factor that brings both masks under `max_px` on their longest side."""
    return max(1, int(math.ceil(max(*mask.shape, *other.shape) / max_px)))


def _fine_to_coarse(matrix: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return matrix
    up = np.array([[k, 0.0, (k - 1) / 2.0], [0.0, k, (k - 1) / 2.0]])
    return compose_affine(invert_affine(up), compose_affine(matrix, up))


def estimate_transform(
    moving: np.ndarray,
    fixed: np.ndarray,
    *,
    affine: bool = False,
    allow_flip: bool = False,
    **kw,
) -> Estimate:
    """Register boolean tissue masks of the same µm/px: moving (H&E) → fixed (IHC) pixels.

    `allow_flip=True` also tries the mirrored H&E (a section mounted face down) and keeps the
    better fit; off by default because a mirror fit of a roughly symmetric piece can win by
    chance, and mirrored sections are rare. See `_estimate` for the search itself.
    """
    moving = np.asarray(moving, dtype=bool)
    fixed = np.asarray(fixed, dtype=bool)
    if not moving.any() or not fixed.any():
        raise ValueError("no tissue in " + ("the H&E" if not moving.any() else "the IHC") + " mask")
    best = _estimate(moving, fixed, affine=affine, **kw)
    if allow_flip:
        alt = estimate_mirrored(moving, fixed, affine=affine, **kw)
        if alt.dice > best.dice:
            best = alt
    return best


def estimate_mirrored(
    moving: np.ndarray, fixed: np.ndarray, *, affine: bool = False, **kw
) -> Estimate:
    """The best fit of the MIRRORED moving mask (left-right; any other mirror is that one plus a
    rotation), as a map of the unmirrored moving pixels: `flipped=True`."""
    moving = np.asarray(moving, dtype=bool)
    fixed = np.asarray(fixed, dtype=bool)
    w = moving.shape[1]
    flip = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]])
    alt = _estimate(moving[:, ::-1].copy(), fixed, affine=affine, **kw)
    m = compose_affine(alt.matrix, flip)
    rm = None if alt.rigid_matrix is None else compose_affine(alt.rigid_matrix, flip)
    return Estimate(m, warped_dice(moving, fixed, m), alt.angle_deg, True, rm)


def _estimate(
    moving: np.ndarray,
    fixed: np.ndarray,
    *,
    affine: bool = False,
    sweep_max_px: int = 128,
    candidate_max_px: int = 256,
    polish_max_px: int = 768,
    step_deg: float = 3.0,
    n_candidates: int = 3,
) -> Estimate:
    """The proper (no mirror) fit of two non-empty boolean masks.

    Coarse-to-fine so big thumbnails stay cheap: a 360° sweep at ≤`sweep_max_px`, refinement of
    the best `n_candidates` angles at ≤`candidate_max_px`, a final polish of the winner at
    ≤`polish_max_px`.
    """
    k0 = _level(moving, fixed, sweep_max_px)
    sweep = sorted(
        angle_sweep(_downscale(moving, k0), _downscale(fixed, k0), step_deg), key=lambda t: -t[0]
    )
    # distinct candidates: best few angles at least 20° apart (keeps the 180° alternative alive)
    picks: list[tuple[float, float, np.ndarray]] = []
    for cand in sweep:
        if all(abs((cand[1] - p[1] + 180) % 360 - 180) >= 20 for p in picks):
            picks.append(cand)
        if len(picks) >= n_candidates:
            break
    k1 = _level(moving, fixed, candidate_max_px)
    m1, f1 = _downscale(moving, k1) >= 0.5, _downscale(fixed, k1) >= 0.5
    scored = []
    for _, _ang, mat in picks:
        r = refine(m1, f1, _fine_to_coarse(_coarse_to_fine(mat, k0), k1))
        scored.append((warped_dice(m1, f1, r), r))
    best_mat = max(scored, key=lambda t: t[0])[1]
    k2 = _level(moving, fixed, polish_max_px)
    m2, f2 = _downscale(moving, k2) >= 0.5, _downscale(fixed, k2) >= 0.5
    polished = refine(m2, f2, _fine_to_coarse(_coarse_to_fine(best_mat, k1), k2))
    rigid = _coarse_to_fine(polished, k2)
    m = _coarse_to_fine(refine(m2, f2, polished, affine=True), k2) if affine else rigid
    angle = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    return Estimate(m, warped_dice(moving, fixed, m), angle, rigid_matrix=rigid if affine else None)
