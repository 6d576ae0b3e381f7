"""A picture a person can check a registration with, at a glance.

Left: the H&E thumbnail with its tissue outline (green) and the IHC tissue outline mapped onto it
(magenta) — on a good fit they coincide. Right: a checkerboard of H&E and the warped IHC —
structures must continue across the squares.
"""

from __future__ import annotations

import io
import math

import numpy as np

from cscl.registration.estimate import warp
from cscl.registration.io import invert_affine


def warp_rgb(rgb: np.ndarray, matrix: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Warp an RGB image (`matrix`: its px → output px); outside = white like glass."""
    inv = 255.0 - rgb.astype(np.float32)
    out = np.stack([warp(inv[..., c], matrix, out_shape) for c in range(3)], axis=-1)
    return (255.0 - np.clip(out, 0, 255)).astype(np.uint8)


def checkerboard(a: np.ndarray, b: np.ndarray, n: int = 8) -> np.ndarray:
    """Alternate squares of `a` and `b` (same shape), about `n` squares on the long side."""
    h, w = a.shape[:2]
    s = max(1, int(math.ceil(max(h, w) / n)))
    yy, xx = np.mgrid[0:h, 0:w]
    sel = ((yy // s + xx // s) % 2).astype(bool)
    out = a.copy()
    out[sel] = b[sel]
    return out


def overlay_png(
    he_rgb: np.ndarray,
    he_mask: np.ndarray,
    ihc_rgb: np.ndarray,
    ihc_mask: np.ndarray,
    thumb_matrix: np.ndarray,
    title: str,
) -> bytes:
    """PNG bytes of the two-panel overlay; `thumb_matrix` maps H&E thumb px → IHC thumb px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inv = invert_affine(thumb_matrix)  # IHC thumb px → H&E thumb px
    shape = he_mask.shape
    ihc_on_he = warp_rgb(ihc_rgb, inv, shape)
    ihc_mask_on_he = warp(ihc_mask.astype(np.float32), inv, shape)
    h, w = shape
    aspect = w / max(h, 1)
    fig, axes = plt.subplots(1, 2, figsize=(min(16, 2 * 6 * aspect + 1), 6.4), dpi=100)
    ax = axes[0]
    ax.imshow(he_rgb)
    ax.contour(he_mask.astype(float), levels=[0.5], colors=["#00c000"], linewidths=1.2)
    if ihc_mask_on_he.max() >= 0.5:
        ax.contour(ihc_mask_on_he, levels=[0.5], colors=["#ff00ff"], linewidths=1.2)
    ax.set_title("H&E + tissue outlines: H&E (green), IHC mapped (magenta)", fontsize=9)
    axes[1].imshow(checkerboard(he_rgb, ihc_on_he))
    axes[1].set_title("checkerboard H&E / warped IHC", fontsize=9)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def failure_png(he_rgb: np.ndarray | None, title: str, message: str) -> bytes:
    """A placeholder overlay for a pair that could not be registered (says why, in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    if he_rgb is not None:
        ax.imshow(he_rgb)
    ax.text(
        0.5,
        0.5,
        "NOT REGISTERED\n" + message,
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="red",
        fontsize=10,
        wrap=True,
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "red"},
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
