"""Streamed (block-by-block) tissue segmentation gives the SAME mask, bit for bit, as the
whole-image algorithm it replaced, which is kept here as the reference (`reference_segment_rgb`,
the pre-issue-14 code): synthetic H&E and IHC slides from the generator, test images with pen
ink, real slides (../shared/data/real; skipped when absent), several block heights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu
from slides import render

from cscl.wsi.readers import open_slide
from cscl.wsi.tissue import (
    TissueMask,
    TissueParams,
    _disk,
    glass_level,
    hsv_sv,
    mean_optical_density,
    optical_density,
    otsu,
    pen_mask,
    saturation,
    segment_rgb,
    segment_tissue,
)

REAL = Path(os.environ.get("CSCL_REAL_DATA", Path(__file__).parents[2] / "../shared/data/real"))


# ---- the reference: the whole-image implementation before issue 14 ---------------------------
def _ref_hsv_sv(rgb):
    x = rgb.astype(np.float32) / 255.0
    mx, mn = x.max(-1), x.min(-1)
    delta = mx - mn
    s = np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    d = np.maximum(delta, 1e-6)
    h = np.select([mx == r, mx == g], [((g - b) / d) % 6.0, (b - r) / d + 2.0], (r - g) / d + 4.0)
    h = np.where(delta > 0, h * 60.0, 0.0)
    return h.astype(np.float32), s.astype(np.float32), mx.astype(np.float32)


def _ref_pen_mask(rgb):
    h, s, v = _ref_hsv_sv(rgb)
    blue = (h >= 190) & (h < 250) & (s > 0.45) & (v < 0.95)
    green = (h >= 70) & (h < 170) & (s > 0.3)
    return blue | green | (v < 0.16)


def _ref_background_threshold(values, floor):
    if values.size < 64 or float(values.max() - values.min()) < 1e-3:
        return max(floor, float(values.max()) + 1e-3 if values.size else 1.0)
    try:
        t = float(threshold_multiotsu(values, classes=3, nbins=128)[0])
    except ValueError:
        t = otsu(values)
    return max(floor, t)


def reference_glass_level(od):
    v = od[np.isfinite(od)].ravel()
    if v.size == 0:
        return 0.0, 0.0
    low = v[v <= np.percentile(v, 50)]
    hist, edges = np.histogram(low, bins=200)
    bg = min(float(edges[int(np.argmax(hist))] + (edges[1] - edges[0]) / 2), 0.1)
    near = v[np.abs(v - bg) < 0.03]
    noise = float(1.4826 * np.median(np.abs(near - np.median(near)))) if near.size else 0.0
    return bg, noise


def _ref_clean_mask(mask, px_mm2, params, mpp):
    radius = int(round(params.close_um / mpp))
    if radius >= 1:
        pad = radius + 1
        m = ndi.binary_closing(np.pad(mask, pad), structure=_disk(radius))
        mask = m[pad:-pad, pad:-pad]
    holes, n = ndi.label(~mask)
    if n:
        sizes = np.bincount(holes.ravel())
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        small = sizes * px_mm2 < params.max_hole_mm2
        small[0] = False
        small[border] = False
        mask = mask | small[holes]
    blobs, n = ndi.label(mask)
    if n:
        sizes = np.bincount(blobs.ravel())
        keep = sizes * px_mm2 >= params.min_blob_mm2
        keep[0] = False
        mask = keep[blobs]
    return mask


def reference_segment_rgb(rgb, mpp, params):
    h, w = rgb.shape[:2]
    s, od_px, pen = (
        np.empty((h, w), np.float32),
        np.empty((h, w), np.float32),
        np.zeros((h, w), bool),
    )
    for y in range(0, h, 256):
        block = rgb[y : y + 256]
        s[y : y + 256] = _ref_hsv_sv(block)[1]
        od_px[y : y + 256] = optical_density(block).mean(-1)
        if params.pen_filter:
            pen[y : y + 256] = _ref_pen_mask(block)
    s = ndi.uniform_filter(s, 3)
    od = ndi.uniform_filter(od_px, 3)
    thr = _ref_background_threshold(s[~pen], params.min_saturation)
    mask = (s >= thr) & (od >= params.min_od)
    if params.min_od_contrast > 0:
        bg, noise = reference_glass_level(od_px[~pen])
        mask |= od_px >= bg + max(params.min_od_contrast, 5.0 * noise)
    mask &= ~pen
    if pen.any():
        mask &= ~ndi.binary_dilation(pen, iterations=2)
    px_mm2 = (mpp / 1000.0) ** 2
    return _ref_clean_mask(mask, px_mm2, params, mpp), thr, float(pen.mean())


# ---- helpers ------------------------------------------------------------------------------------
def _assert_same(rgb, mpp, params=None, rows=(None, 1, 5, 64)):
    params = params or TissueParams()
    ref_mask, ref_thr, ref_pen = reference_segment_rgb(rgb, mpp, params)
    for r in rows:
        mask, thr, pen = segment_rgb(rgb, mpp, params, rows=r)
        assert mask.dtype == bool and mask.shape == ref_mask.shape
        assert np.array_equal(mask, ref_mask), (
            f"rows={r}: {int((mask != ref_mask).sum())} px differ"
        )
        assert thr == ref_thr and pen == ref_pen
    return ref_mask


def _with_pen(img: np.ndarray) -> np.ndarray:
    img = img.copy()
    h, w = img.shape[:2]
    img[h // 20 : h // 20 + 6, w // 10 : 9 * w // 10] = (20, 40, 170)  # blue marker
    img[h - h // 15 - 6 : h - h // 15, w // 10 : 9 * w // 10] = (30, 140, 40)  # green marker
    img[h // 3 : 2 * h // 3, w - w // 12 - 5 : w - w // 12] = (15, 15, 15)  # black marker
    return img


# ---- per-pixel building blocks -------------------------------------------------------------------
def test_saturation_table_equals_hsv_for_every_channel_pair():
    rng = np.random.default_rng(0)
    mx, mn = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    keep = mn <= mx
    mx, mn = mx[keep], mn[keep]
    mid = (mn + rng.random(mx.size) * (mx - mn + 1)).astype(int).clip(mn, mx)
    for perm in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        rgb = np.stack([mx, mn, mid], 1)[:, perm].astype(np.uint8).reshape(-1, 257, 3)
        assert np.array_equal(saturation(rgb), hsv_sv(rgb)[1])


def test_per_pixel_features_equal_the_reference():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    rgb[0, :8] = [[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]] + [
        [1, 1, 1]
    ] * 3
    for new, ref in zip(hsv_sv(rgb), _ref_hsv_sv(rgb), strict=True):
        assert np.array_equal(new.view(np.uint32), ref.view(np.uint32))
    assert np.array_equal(pen_mask(rgb), _ref_pen_mask(rgb))
    od = mean_optical_density(rgb)
    assert np.array_equal(od.view(np.uint32), optical_density(rgb).mean(-1).view(np.uint32))


def test_per_pixel_values_do_not_depend_on_the_block():
    rgb = np.random.default_rng(1).integers(0, 256, (301, 203, 3), dtype=np.uint8)
    od = optical_density(rgb).mean(-1)
    s = hsv_sv(rgb)[1]
    for a, b in [(0, 1), (1, 4), (7, 300), (299, 301)]:
        assert np.array_equal(optical_density(rgb[a:b]).mean(-1), od[a:b])
        assert np.array_equal(mean_optical_density(rgb[a:b]), od[a:b])
        assert np.array_equal(hsv_sv(rgb[a:b])[1], s[a:b])


def test_glass_level_from_the_value_table_equals_the_percentile_version():
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 64, 1001, 20000):
        od = optical_density(rng.integers(150, 256, (n, 3), dtype=np.uint8)).mean(-1)
        assert glass_level(od) == reference_glass_level(od)
    od = rng.normal(0.03, 0.01, (300, 301)).astype(np.float32)
    od[5, 5] = np.nan
    assert glass_level(od) == reference_glass_level(od)
    assert glass_level(np.zeros(0, np.float32)) == (0.0, 0.0)


def test_integral_image_unchanged():
    mask = np.random.default_rng(3).random((97, 131)) < 0.4
    m = TissueMask(mask, np.zeros((97, 131, 3), np.uint8), 16.0, 8.0, 0.1, 0.0)
    ref = np.zeros((98, 132), np.int32)
    ref[1:, 1:] = mask.astype(np.int32).cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
    assert np.array_equal(m.integral(), ref) and m.integral().dtype == np.int32


# ---- whole masks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("stain", ["HE", "KI67", "HER2"])
def test_same_mask_on_test_images_with_and_without_pen(stain):
    img = render(517, 389, stain, seed=4)
    _assert_same(img, 8.0, rows=(None, 2))
    _assert_same(_with_pen(img), 8.0)  # incl. one-row blocks
    _assert_same(_with_pen(img), 4.0, TissueParams(max_hole_mm2=0.01, close_um=8.0), (None, 3))
    _assert_same(_with_pen(img), 8.0, TissueParams(pen_filter=False, min_od_contrast=0.0), (7,))


def test_same_mask_on_blank_tiny_and_degenerate_images():
    glass = render(300, 200, "HE", seed=5, blank=True)
    _assert_same(glass, 8.0)
    _assert_same(glass[:1], 8.0)
    _assert_same(glass[:, :1], 8.0)
    two = np.full((40, 50, 3), 242, np.uint8)  # two colours only: the Otsu fallback
    two[10:30, 10:40] = (120, 40, 120)
    _assert_same(two, 8.0)
    _assert_same(np.full((70, 90, 3), (20, 40, 170), np.uint8), 8.0)  # all pen
    # two saturations only, kept apart by dark ink of the same saturations: multi-Otsu finds
    # two values and raises, the Otsu fallback decides
    ink = np.zeros((60, 80, 3), np.uint8)
    ink[:, :38], ink[:, 38:40] = (200, 100, 100), (40, 20, 20)
    ink[:, 40:42], ink[:, 42:] = (40, 30, 30), (200, 150, 150)
    with pytest.raises(ValueError):
        threshold_multiotsu(ndi.uniform_filter(hsv_sv(ink)[1], 3)[~pen_mask(ink)], nbins=128)
    _assert_same(ink, 8.0)


@pytest.fixture(scope="module")
def synthetic_slides(tmp_path_factory) -> list[Path]:
    from cscl.synthetic.testing import tiny_cohort

    root = tmp_path_factory.mktemp("seg")
    tiny_cohort(root, n_cases=2, seed=3, stains=("HE", "KI67", "HER2"))
    return sorted((root / "slides").glob("*.svs"))


@pytest.mark.parametrize("seg_mpp", [8.0, 2.0])
def test_same_mask_on_generator_slides(synthetic_slides, seg_mpp):
    assert len(synthetic_slides) == 6
    for path in synthetic_slides:
        with open_slide(path) as wsi:
            m = segment_tissue(wsi, TissueParams(seg_mpp=seg_mpp))
        assert np.array_equal(m.mask, reference_segment_rgb(m.thumb, m.mpp, TissueParams())[0])
        _assert_same(_with_pen(m.thumb), m.mpp, rows=(None, 3))


@pytest.mark.skipif(not (REAL / "slides").is_dir(), reason=f"real slides not found at {REAL}")
def test_same_mask_on_real_slides():
    for name, mpp in [("cmu-1-small-region.svs", None), ("tcga-cr-7395-01a-01-ts1.svs", 0.5)]:
        with open_slide(REAL / "slides" / name, mpp=mpp) as wsi:
            for seg_mpp in (8.0, 2.0):
                m = segment_tissue(wsi, TissueParams(seg_mpp=seg_mpp))
                ref = reference_segment_rgb(m.thumb, m.mpp, TissueParams())
                assert np.array_equal(m.mask, ref[0]) and m.threshold == ref[1], (name, seg_mpp)
    for name in ("Rat-Kidney_HE.jpg", "Rat-Kidney_PanCytokeratin.jpg"):
        path = REAL / "pairs" / "rat-kidney" / name
        if path.exists():
            rgb = np.asarray(Image.open(path).convert("RGB"))
            for mpp in (5.0, 2.0):
                _assert_same(rgb, mpp, rows=(None, 7))
