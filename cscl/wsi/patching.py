"""The patch grid: square patches of `patch_size` px at `target_mpp`, kept where there is tissue.

Coordinates are level-0 top-left (x, y), int64, as TRIDENT/CLAM loaders expect. Each patch is
read from the coarsest pyramid level that still has at least the target resolution, then resized
to `patch_size` — far cheaper than reading level 0 and shrinking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cscl.errors import InputError
from cscl.wsi.tissue import TissueMask, tissue_fraction_boxes


@dataclass
class PatchGrid:
    coords: np.ndarray  # (N, 2) int64 level-0 top-left (x, y)
    tissue: np.ndarray  # (N,) tissue fraction of each kept patch
    patch_size: int  # px at target_mpp (what the encoder sees)
    patch_size_level0: int  # px at level 0
    target_mpp: float
    mpp_level0: float
    level: int  # pyramid level read
    read_size: int  # px read at `level` (resized to patch_size)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def coord_attrs(self, wsi) -> dict:
        """The geometry attrs of the `coords` dataset (docs/CONTRACTS.md)."""
        mag0 = wsi.magnification
        return {
            "patch_size": int(self.patch_size),
            "patch_size_level0": int(self.patch_size_level0),
            "level0_magnification": mag0,
            "target_magnification": mag0 * self.mpp_level0 / self.target_mpp,
            "level0_width": int(wsi.width),
            "level0_height": int(wsi.height),
            "mpp_level0": float(self.mpp_level0),
            "target_mpp": float(self.target_mpp),
        }


def patch_size_level0(patch_size: int, target_mpp: float, mpp_level0: float) -> int:
    return max(1, int(round(patch_size * target_mpp / mpp_level0)))


def patch_grid(
    wsi, mask: TissueMask, target_mpp: float, patch_size: int, min_tissue: float
) -> PatchGrid:
    """All full patches inside the slide whose tissue fraction is >= `min_tissue`."""
    if target_mpp <= 0 or patch_size <= 0:
        raise InputError(f"target mpp ({target_mpp}) and patch size ({patch_size}) must be > 0")
    if not 0.0 <= min_tissue <= 1.0:
        raise InputError(f"--min-tissue must be within [0, 1], got {min_tissue}")
    ps0 = patch_size_level0(patch_size, target_mpp, wsi.mpp)
    xs = np.arange(0, wsi.width - ps0 + 1, ps0, dtype=np.int64)
    ys = np.arange(0, wsi.height - ps0 + 1, ps0, dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys)  # row-major: y outer, x inner (tile-friendly read order)
    gx, gy = gx.ravel(), gy.ravel()
    frac = tissue_fraction_boxes(mask, gx, gy, ps0)
    keep = frac >= max(min_tissue, 1e-9)
    coords = np.stack([gx[keep], gy[keep]], 1).astype(np.int64).reshape(-1, 2)
    ds = ps0 / patch_size
    level = wsi.best_level_for_downsample(ds)
    read_size = max(1, int(round(ps0 / wsi.level_downsamples[level])))
    return PatchGrid(
        coords=coords,
        tissue=frac[keep].astype(np.float32),
        patch_size=int(patch_size),
        patch_size_level0=ps0,
        target_mpp=float(target_mpp),
        mpp_level0=float(wsi.mpp),
        level=level,
        read_size=read_size,
    )
