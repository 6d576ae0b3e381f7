"""Tissue detection of sparse tissue (lung/fat-like lace) and pale IHC counterstain.

Both are barely saturated, so the saturation cue alone misses them; the optical-density-above-
glass cue (`TissueParams.min_od_contrast`) must find them without taking glass or tinted glass.
"""

from __future__ import annotations

import numpy as np
import pytest

from cscl.wsi.tissue import TissueParams, segment_rgb

GLASS = (243, 243, 245)


def _ellipse(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    return ((xx - size / 2) / (0.35 * size)) ** 2 + ((yy - size / 2) / (0.3 * size)) ** 2 < 1


def _image(kind: str, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(RGB at 8 µm/px, truth): glass with one tissue region of the given kind."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float32)
    img[:] = GLASS
    region = _ellipse(size)
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "lung":  # thin pale septa around ~100 µm air spaces (12 px at 8 µm/px)
        lace = ((yy % 12) < 2) | ((xx % 12) < 2)
        img[region & lace] = (214, 196, 214)
    elif kind == "fat":  # adipocyte membranes around ~130 µm empty cells
        lace = ((yy % 16) < 1) | ((xx % 16) < 1)
        img[region & lace] = (205, 185, 205)
    elif kind == "pale_ihc":  # hematoxylin counterstain only: light grey-blue, saturation ~0.04
        img[region] = (212, 214, 222)
    img += rng.normal(0, 1.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), region


@pytest.mark.parametrize("kind", ["lung", "fat", "pale_ihc"])
def test_sparse_and_pale_tissue_is_found(kind):
    img, truth = _image(kind)
    mask, _, _ = segment_rgb(img, 8.0, TissueParams())
    cover = (mask & truth).sum() / truth.sum()
    spill = (mask & ~truth).sum() / (~truth).sum()
    old, _, _ = segment_rgb(img, 8.0, TissueParams(min_od_contrast=0.0))  # saturation cue only
    print(f"{kind}: covers {cover:.2f} (saturation only {(old & truth).sum() / truth.sum():.2f})")
    assert cover > 0.8 and spill < 0.03  # cells cut by the region edge stay open
    assert (old & truth).sum() / truth.sum() < 0.5  # the case the new cue exists for


def test_tinted_glass_is_still_not_tissue():
    img = np.empty((256, 256, 3), np.uint8)
    img[:] = GLASS
    img[:, 128:] = (236, 236, 246)  # slightly bluish glass
    mask, _, _ = segment_rgb(img, 8.0, TissueParams())
    assert not mask.any()
