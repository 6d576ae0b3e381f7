"""Pair H&E patches with IHC patches of the same tissue location (fixes defect 1 of the reference).

The reference pairs patches of different stains by index, so a "positive" is a random IHC patch.
Here each H&E patch centre is mapped into IHC level-0 space with the registration matrix and
matched to an IHC patch centre within `max_dist` (IHC level-0 pixels). The map is the affine
matrix or, when `cscl register` refined it non-rigidly, a `Transform` (matrix + displacement
field; `transform_of(row)` reads it from a registration row).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from cscl.registration.transform import map_points


def _centres(coords: np.ndarray, patch_size_level0: float | None) -> np.ndarray:
    c = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    return c if patch_size_level0 is None else c + float(patch_size_level0) / 2.0


def pair_by_location(
    he_coords: np.ndarray,
    ihc_coords: np.ndarray,
    matrix,
    max_dist: float,
    he_patch_size_level0: float | None = None,
    ihc_patch_size_level0: float | None = None,
    *,
    one_to_one: bool = True,
    k: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(he_idx, ihc_idx)` of H&E/IHC patches that cover the same tissue.

    `matrix`: a (2, 3) H&E → IHC level-0 matrix or a `Transform` (anything with `.apply(xy)`).
    Coordinates are level-0 (x, y). Feature files store patch TOP-LEFT corners: pass the patch
    sizes (level-0 px) so centres are compared — under a rotation, corners do not map to corners.
    With sizes None the coordinates are used as given (already centres).

    `one_to_one=True` (default): each IHC patch is used at most once; candidate pairs are taken in
    order of increasing distance (greedy, deterministic), considering the `k` nearest IHC centres
    per H&E patch. `one_to_one=False`: every H&E patch gets its nearest IHC patch within
    `max_dist`, and an IHC patch may serve several H&E patches.
    H&E patches with no IHC centre within `max_dist` are left out. Output is sorted by `he_idx`.
    """
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    he = _centres(he_coords, he_patch_size_level0)
    ihc = _centres(ihc_coords, ihc_patch_size_level0)
    if len(he) == 0 or len(ihc) == 0:
        return empty
    if not max_dist > 0:
        raise ValueError(f"max_dist must be > 0, got {max_dist}")
    mapped = map_points(matrix, he)
    tree = cKDTree(ihc)
    if not one_to_one:
        dist, idx = tree.query(mapped, k=1, distance_upper_bound=max_dist)
        keep = np.isfinite(dist)
        he_idx = np.flatnonzero(keep).astype(np.int64)
        return he_idx, idx[keep].astype(np.int64)
    kk = int(min(max(k, 1), len(ihc)))
    dist, idx = tree.query(mapped, k=kk, distance_upper_bound=max_dist)
    dist = dist.reshape(len(he), kk)
    idx = idx.reshape(len(he), kk)
    rows, cols = np.nonzero(np.isfinite(dist))
    if len(rows) == 0:
        return empty
    d = dist[rows, cols]
    cand_ihc = idx[rows, cols]
    # Stable sort on (distance, he index, ihc index) so ties resolve the same way every run.
    order = np.lexsort((cand_ihc, rows, d))
    used_he = np.zeros(len(he), dtype=bool)
    used_ihc = np.zeros(len(ihc), dtype=bool)
    out_he: list[int] = []
    out_ihc: list[int] = []
    for i in order:
        h, j = rows[i], cand_ihc[i]
        if used_he[h] or used_ihc[j]:
            continue
        used_he[h] = used_ihc[j] = True
        out_he.append(int(h))
        out_ihc.append(int(j))
    he_idx = np.asarray(out_he, dtype=np.int64)
    ihc_idx = np.asarray(out_ihc, dtype=np.int64)
    s = np.argsort(he_idx, kind="stable")
    return he_idx[s], ihc_idx[s]
