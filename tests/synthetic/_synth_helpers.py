"""Pixel measurements shared by the synthetic tests (plain numpy, no cscl code under test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
from skimage.color import rgb2hed


def read_level(path: str | Path, level: int) -> tuple[np.ndarray, float]:
    s = openslide.OpenSlide(str(path))
    img = np.asarray(s.read_region((0, 0), level, s.level_dimensions[level]).convert("RGB"))
    return img, float(s.level_downsamples[level])


def od_sum(img: np.ndarray) -> np.ndarray:
    return (-np.log10(np.clip((img.astype(np.float64) + 1) / 256.0, 1e-3, 1))).sum(-1)


def tissue_centroid(img: np.ndarray, downsample: float) -> np.ndarray:
    """Level-0 (x, y) centroid of pixels darker than glass."""
    ys, xs = np.nonzero(od_sum(img) > 0.1)
    return np.array([xs.mean(), ys.mean()]) * downsample


def dab_fraction(img: np.ndarray) -> float:
    """Fraction of cell pixels (nuclei / membranes) that carry DAB (colour deconvolution)."""
    cells = od_sum(img) > 0.35
    dab = rgb2hed(img)[..., 2]
    return float(np.mean(dab[cells] > 0.03)) if cells.any() else 0.0
