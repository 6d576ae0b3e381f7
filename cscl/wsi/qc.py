"""Per-slide quality numbers that travel with features and predictions.

Serving returns them and drift monitoring compares them with the training slides: a new scanner
or a different stain protocol shows up first as a shift of mpp or of the tissue's optical density.
"""

from __future__ import annotations

import numpy as np

from cscl.wsi.readers.tile_check import TileCheck
from cscl.wsi.tissue import TissueMask, optical_density


def slide_qc(wsi, mask: TissueMask, tile_check: TileCheck | None = None) -> dict:
    """tissue_area_mm2, mpp, od_mean/od_std (RGB optical density of tissue), vendor, size, the
    reader backend that decoded the pixels (`reader`) and, with `tile_check`, the tile-integrity
    outcome (`tile_check`, `tiles_checked`, `corrupt_tiles`, `corrupt_tile_examples`)."""
    od = optical_density(mask.thumb[mask.mask]) if mask.mask.any() else np.zeros((0, 3))
    mean = od.mean(0) if len(od) else np.full(3, np.nan)
    std = od.std(0) if len(od) else np.full(3, np.nan)
    qc = {
        "tissue_area_mm2": round(mask.area_mm2(), 4),
        "tissue_fraction": round(mask.tissue_fraction, 4),
        "mpp": float(wsi.mpp),
        "mpp_source": wsi.mpp_source,
        "od_mean": [round(float(v), 5) for v in mean],
        "od_std": [round(float(v), 5) for v in std],
        "vendor": wsi.vendor,
        "reader": wsi.backend,
        "level0_width": int(wsi.width),
        "level0_height": int(wsi.height),
        "pen_fraction": round(mask.pen_fraction, 4),
    }
    if tile_check is not None:
        qc.update(tile_check.as_qc())
    return qc
