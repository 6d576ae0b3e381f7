"""Attention heatmaps: where on the slide the slide encoder looked, drawn over the thumbnail.

Each patch rectangle is painted with its normalised attention on a thumbnail-scale grid and
blended over the slide with a colour map, a colour bar and the top patches outlined — the picture
a pathologist checks to see whether the model attends to tumour or to artefacts.

Softmax attention over thousands of patches is dominated by a few, so the default normalisation
is the rank (percentile) of each patch; `normalize="minmax"` shows raw relative values.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from cscl.errors import InputError
from cscl.io import storage
from cscl.wsi.readers import open_slide


def normalise_attention(attention: np.ndarray, how: str = "rank") -> np.ndarray:
    """Map attention to [0, 1]: `rank` (percentile, ties averaged) or `minmax`."""
    a = np.asarray(attention, dtype=np.float64).ravel()
    if a.size == 0:
        return a
    if how == "minmax":
        lo, hi = float(a.min()), float(a.max())
        return np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)
    if how == "rank":
        from scipy.stats import rankdata

        return np.zeros_like(a) if a.size == 1 else (rankdata(a) - 1.0) / (a.size - 1.0)
    raise InputError(f"unknown attention normalisation {how!r}", hint="use 'rank' or 'minmax'")


def paint_patches(
    shape: tuple[int, int],
    coords: np.ndarray,
    values: np.ndarray,
    patch_size_level0: float,
    downsample: float,
) -> np.ndarray:
    """(h, w) float grid, NaN where no patch; each patch's level-0 box filled with its value
    (where patches overlap, the higher value wins so a hot patch is never hidden)."""
    h, w = shape
    grid = np.full((h, w), np.nan, dtype=np.float32)
    c = np.asarray(coords, dtype=np.float64) / downsample
    s = float(patch_size_level0) / downsample
    x0 = np.clip(np.floor(c[:, 0]).astype(int), 0, w)
    y0 = np.clip(np.floor(c[:, 1]).astype(int), 0, h)
    x1 = np.clip(np.maximum(np.ceil(c[:, 0] + s).astype(int), x0 + 1), 0, w)
    y1 = np.clip(np.maximum(np.ceil(c[:, 1] + s).astype(int), y0 + 1), 0, h)
    for i in np.argsort(values, kind="stable"):  # ascending: higher values painted last
        if x1[i] > x0[i] and y1[i] > y0[i]:
            grid[y0[i] : y1[i], x0[i] : x1[i]] = values[i]
    return grid


def _check_inputs(coords, attention, patch_size_level0) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(coords)
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim == 2 and c.ndim == 2 and a.shape[1] == len(c) and a.shape[0] != len(c):
        a = a.mean(0)  # (heads, N) → mean over heads
    a = a.ravel()
    if c.ndim != 2 or c.shape[1] != 2:
        raise InputError(f"coords must be (N, 2) level-0 (x, y), got shape {c.shape}")
    if len(c) != len(a):
        raise InputError(
            f"{len(c)} patch coordinates but {len(a)} attention values",
            hint="coords and attention must come from the same feature file",
        )
    if len(c) == 0:
        raise InputError("no patches to draw (empty coords)")
    if not np.isfinite(a).all():
        raise InputError("attention has NaN/inf values", hint="check the model and the features")
    if not (patch_size_level0 and float(patch_size_level0) > 0):
        raise InputError(
            f"patch_size_level0 must be > 0, got {patch_size_level0}",
            hint="feature files store it as the `patch_size_level0` attr of `coords`",
        )
    return c.astype(np.float64), a


def attention_heatmap(
    slide_uri: str | Path,
    coords: np.ndarray,
    attention: np.ndarray,
    patch_size_level0: float,
    out_png: str | Path,
    thumbnail_max: int = 1024,
    *,
    mpp: float | None = None,
    title: str | None = None,
    normalize: str = "rank",
    cmap: str = "inferno",
    alpha: float = 0.55,
    top_k: int = 5,
    reader: str = "auto",
) -> str:
    """Write a PNG of `attention` (N,) of patches at level-0 top-left `coords` (N, 2) over the
    slide thumbnail (longest side ≤ `thumbnail_max` px). Returns the PNG's path/URI.

    The `top_k` most attended patches are outlined in cyan. `attention` may also be
    (heads, N); heads are averaged. `reader` is the slide reader backend (or "auto").
    """
    c, a = _check_inputs(coords, attention, patch_size_level0)
    with open_slide(str(slide_uri), backend=reader, mpp=mpp) as wsi:
        ds = max(1.0, max(wsi.width, wsi.height) / float(thumbnail_max))
        thumb = wsi.read_downsampled(ds)
        slide_name = wsi.path.name
        level0 = (wsi.width, wsi.height)
    outside = (c[:, 0] >= level0[0]) | (c[:, 1] >= level0[1]) | (c < -patch_size_level0).any(1)
    if outside.all():
        raise InputError(
            f"none of the {len(c)} patches lies inside {slide_name} ({level0[0]}×{level0[1]} px)",
            hint="are the features from this slide?",
        )
    v = normalise_attention(a, normalize)
    grid = paint_patches(thumb.shape[:2], c, v, patch_size_level0, ds)
    png = _render(
        thumb,
        grid,
        c,
        v,
        a,
        patch_size_level0,
        ds,
        title or slide_name,
        normalize,
        cmap,
        alpha,
        top_k,
    )
    storage.write_bytes(str(out_png), png)
    return str(out_png)


def _render(thumb, grid, c, v, a, size0, ds, title, normalize, cmap, alpha, top_k) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = grid.shape
    fig_w = 10.0
    fig_h = max(3.0, min(12.0, fig_w * h / max(w, 1) * 0.9 + 1.0))
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=110)
    ax.imshow(thumb)
    im = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        alpha=alpha,
        interpolation="nearest",
    )
    k = int(min(max(top_k, 0), len(v)))
    for i in np.argsort(-a, kind="stable")[:k]:
        ax.add_patch(
            Rectangle(
                (c[i, 0] / ds, c[i, 1] / ds),
                size0 / ds,
                size0 / ds,
                fill=False,
                edgecolor="cyan",
                linewidth=1.2,
            )
        )
    cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
    cb.set_label("attention percentile" if normalize == "rank" else "attention (min–max scaled)")
    ax.set_title(
        f"{title} — attention of {len(v)} patches"
        + (f", top {k} outlined" if k else "")
        + f"\nmax {a.max():.3g}, median {np.median(a):.3g}, "
        f"entropy {_entropy(a):.2f} of {math.log(max(len(a), 1)):.2f} nats",
        fontsize=10,
    )
    ax.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _entropy(a: np.ndarray) -> float:
    """Entropy of attention normalised to sum 1 (low = focused on few patches)."""
    p = np.clip(np.asarray(a, dtype=np.float64), 0, None)
    s = p.sum()
    if s <= 0:
        return 0.0
    p = p[p > 0] / s
    return float(-(p * np.log(p)).sum())
