"""Non-rigid refinement: dense optical flow between the hematoxylin images of H&E and IHC.

Why: serial sections shrink, stretch and fold unevenly, so after the best rigid map real pairs are
still off by 1–2 % of the image diagonal (ANHIR rTRE), several patches. Every stain carries a
hematoxylin counterstain, so after colour deconvolution (`rgb2hed`) both slides show the same
nuclei-dense architecture (tubules, glands, cortex vs medulla); TV-L1 optical flow
(`skimage.registration.optical_flow_tvl1`) on those images, started from the affine map, finds the
remaining smooth displacement. Both images are histogram-equalised inside the tissue first: the
amount of counterstain differs between an H&E and an IHC protocol, its spatial pattern does not.

The flow is only kept when it raises the architecture correlation of the pair (`structure_ncc`),
so a pair rigid already explains (the synthetic cohort) keeps its affine map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.exposure import equalize_hist
from skimage.registration import optical_flow_tvl1
from skimage.transform import resize

from cscl.registration.io import apply_affine, compose_affine
from cscl.registration.transform import DisplacementField

DEFAULT_FLOW_MAX_PX = 1024  # longest side of the image the flow is computed on
FLOW_SMOOTH_UM = 20.0  # Gaussian smoothing of the flow (µm): no per-cell jitter
STRUCTURE_SIGMA_UM = 24.0  # scale of the architecture compared by the QC (a few cells)
MIN_GAIN = 0.01  # architecture NCC a flow must add to be kept …
MIN_RESIDUAL_CUT = 0.8  # … and it must remove ≥ 20 % of the remaining 1 − NCC


@dataclass
class FlowResult:
    """Flow on a grid over the H&E thumbnail: H&E thumb px q maps to IHC thumb px A(q + v(q))."""

    v: np.ndarray  # (2, h, w): (dx, dy) in H&E THUMBNAIL px, sampled on the grid
    grid_to_thumb: np.ndarray  # (2, 3): grid px centre → H&E thumbnail px
    ncc_before: float
    ncc_after: float


def hematoxylin_image(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Hematoxylin density, histogram-equalised inside the tissue, 0 on glass (float32, 0–1)."""
    h = ndimage.gaussian_filter(rgb2hed(rgb)[..., 0].astype(np.float32), 1.0)
    if mask.sum() < 16:
        return np.zeros(mask.shape, np.float32)
    eq = equalize_hist(h, nbins=256, mask=mask)
    return np.where(mask, eq, 0.0).astype(np.float32)


def _grid(shape: tuple[int, int], max_px: int) -> tuple[tuple[int, int], np.ndarray]:
    """Grid shape (≤ max_px on its long side) and grid px → thumbnail px matrix."""
    h, w = shape
    z = min(1.0, max_px / max(h, w))
    gh, gw = max(1, int(round(h * z))), max(1, int(round(w * z)))
    zy, zx = gh / h, gw / w
    return (gh, gw), np.array([[1 / zx, 0.0, 0.5 / zx - 0.5], [0.0, 1 / zy, 0.5 / zy - 0.5]])


def _to_grid(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == tuple(shape):
        return img.astype(np.float32)
    return resize(img.astype(np.float32), shape, order=1, anti_aliasing=True).astype(np.float32)


def sample_ihc(
    image: np.ndarray,
    thumb_matrix: np.ndarray,
    grid_to_thumb: np.ndarray,
    shape: tuple[int, int],
    v: np.ndarray | None = None,
) -> np.ndarray:
    """IHC thumbnail `image` seen from the H&E grid: value at grid px g is IHC(A(q + v)), q=G(g)."""
    gy, gx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    q = apply_affine(grid_to_thumb, np.stack([gx.ravel(), gy.ravel()], 1))
    if v is not None:
        q = q + np.stack([v[0].ravel(), v[1].ravel()], 1)
    p = apply_affine(thumb_matrix, q)
    out = ndimage.map_coordinates(
        image.astype(np.float32), [p[:, 1], p[:, 0]], order=1, mode="constant", cval=0.0
    )
    return out.reshape(shape)


def common_tissue(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tissue in both, eroded: edges of the masks are not architecture."""
    return ndimage.binary_erosion(a & b, iterations=2)


def structure_ncc(a: np.ndarray, b: np.ndarray, both: np.ndarray, sigma_px: float) -> float:
    """NCC of two images smoothed to the architecture scale, inside the common tissue `both`."""
    if both.sum() < 50:
        return math.nan
    w = ndimage.gaussian_filter(both.astype(np.float32), sigma_px) + 1e-6
    sa = ndimage.gaussian_filter(np.where(both, a, 0).astype(np.float32), sigma_px) / w
    sb = ndimage.gaussian_filter(np.where(both, b, 0).astype(np.float32), sigma_px) / w
    x, y = sa[both] - sa[both].mean(), sb[both] - sb[both].mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return 0.0 if den == 0 else float((x * y).sum()) / den


def pair_structure(
    he_rgb, he_mask, ihc_rgb, ihc_mask, thumb_matrix, thumb_mpp, *, max_px=DEFAULT_FLOW_MAX_PX
):
    """Shared inputs of flow and QC on one grid: (shape, G, he image, ihc image, masks)."""
    shape, g2t = _grid(he_mask.shape, max_px)
    he_img = _to_grid(hematoxylin_image(he_rgb, he_mask), shape)
    he_m = _to_grid(he_mask, shape) >= 0.5
    ihc_img = hematoxylin_image(ihc_rgb, ihc_mask)
    grid_mpp = thumb_mpp * he_mask.shape[1] / shape[1]
    return shape, g2t, he_img, he_m, ihc_img, grid_mpp


def estimate_flow(
    he_rgb: np.ndarray,
    he_mask: np.ndarray,
    ihc_rgb: np.ndarray,
    ihc_mask: np.ndarray,
    thumb_matrix: np.ndarray,
    thumb_mpp: float,
    *,
    max_px: int = DEFAULT_FLOW_MAX_PX,
    min_gain: float = MIN_GAIN,
) -> FlowResult | None:
    """TV-L1 flow from the affine start `thumb_matrix` (H&E thumb px → IHC thumb px).

    None when the flow does not raise the architecture NCC by `min_gain` (rigid was enough, or the
    pair has no common structure — a wrong slide must not be "fixed" by warping).
    """
    shape, g2t, he_img, he_m, ihc_img, grid_mpp = pair_structure(
        he_rgb, he_mask, ihc_rgb, ihc_mask, thumb_matrix, thumb_mpp, max_px=max_px
    )
    ihc_w = sample_ihc(ihc_img, thumb_matrix, g2t, shape)
    ihc_m = sample_ihc(ihc_mask.astype(np.float32), thumb_matrix, g2t, shape) >= 0.5
    sigma = max(1.0, STRUCTURE_SIGMA_UM / grid_mpp)
    before = structure_ncc(he_img, ihc_w, common_tissue(he_m, ihc_m), sigma)
    if not math.isfinite(before) or min(shape) < 16:
        return None
    flow = optical_flow_tvl1(he_img, ihc_w, attachment=10, tightness=0.3, num_warp=5, num_iter=20)
    smooth = max(1.0, FLOW_SMOOTH_UM / grid_mpp)
    # (row, col) flow in grid px → (dx, dy) in H&E thumbnail px
    scale_x, scale_y = g2t[0, 0], g2t[1, 1]
    v = np.stack(
        [
            ndimage.gaussian_filter(flow[1], smooth) * scale_x,
            ndimage.gaussian_filter(flow[0], smooth) * scale_y,
        ]
    ).astype(np.float32)
    ihc_w2 = sample_ihc(ihc_img, thumb_matrix, g2t, shape, v)
    ihc_m2 = sample_ihc(ihc_mask.astype(np.float32), thumb_matrix, g2t, shape, v) >= 0.5
    after = structure_ncc(he_img, ihc_w2, common_tissue(he_m, ihc_m2), sigma)
    # keep a flow that explains a real part of the remaining disagreement, not noise-level gains
    if not (after >= before + min_gain and 1.0 - after <= MIN_RESIDUAL_CUT * (1.0 - before)):
        return None
    return FlowResult(v, g2t, before, after)


def field_level0(flow: FlowResult, he_to_level0: np.ndarray) -> DisplacementField:
    """The flow as a `DisplacementField` in H&E level-0 px (see transform.py)."""
    lin = np.asarray(he_to_level0, dtype=np.float64)[:, :2]
    dx = lin[0, 0] * flow.v[0] + lin[0, 1] * flow.v[1]
    dy = lin[1, 0] * flow.v[0] + lin[1, 1] * flow.v[1]
    g2l = compose_affine(he_to_level0, flow.grid_to_thumb)
    return DisplacementField(dx.astype(np.float32), dy.astype(np.float32), g2l)
