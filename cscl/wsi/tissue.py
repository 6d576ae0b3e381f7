"""Tissue segmentation on a low-resolution image of the slide (a few µm/px).

Two cues, either one marks tissue: (1) Otsu on HSV saturation finds stained tissue on H&E and on
IHC (hematoxylin + DAB) alike, with an optical-density floor that drops faintly tinted glass;
(2) optical density clearly above the slide's own glass level finds what is barely saturated —
the pale hematoxylin counterstain of IHC (saturation ~0.04, as low as tinted glass, but OD ~0.09
against ~0.02 for glass on the real rat-kidney PanCytokeratin section) and thin strands of
sparse tissue (lung, fat, loose connective tissue). Pen ink (strongly saturated blue/green, near
black) is removed before morphology, then small holes are filled and tiny blobs dropped. Sizes are
given in µm so the result does not depend on the scanner's resolution.

Memory: everything runs on blocks of whole rows (`SEG_BLOCK_PX` pixels), so beyond the thumbnail
and the mask it returns segmentation holds the pen marks as bits, a table of distinct optical
densities and one block of temporaries, whatever the slide size (issue 14); the mask is the one
the whole-image algorithm computed, bit for bit (tests/wsi/test_tissue_streaming.py).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cscl.errors import SlideError
from cscl.io.storage import atomic_path


@dataclass(frozen=True)
class TissueParams:
    """Segmentation knobs. They enter the extractor hash: change one and features recompute."""

    seg_mpp: float = 8.0  # µm/px of the image segmented
    min_saturation: float = 0.07  # floor under Otsu's threshold (blank glass has ~0.0–0.04)
    min_od: float = 0.05  # mean optical density floor (drops faint tint on glass)
    min_od_contrast: float = 0.03  # OD above the glass level that is tissue unsaturated (0: off)
    pen_filter: bool = True
    close_um: float = 16.0  # closing radius: joins fragments of one tissue piece
    min_blob_mm2: float = 0.005  # smaller connected pieces are dropped (dust, debris)
    max_hole_mm2: float = 0.05  # holes smaller than this are filled (fat cells, nuclei gaps)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TissueMask:
    """Boolean tissue mask with its geometry; `thumb` is the RGB image it was computed on."""

    mask: np.ndarray  # (h, w) bool
    thumb: np.ndarray  # (h, w, 3) uint8
    downsample: float  # level-0 px per mask px
    mpp: float  # µm per mask px
    threshold: float  # saturation threshold used
    pen_fraction: float  # share of the image removed as pen ink

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean())

    def area_mm2(self) -> float:
        return float(self.mask.sum()) * (self.mpp / 1000.0) ** 2

    def integral(self) -> np.ndarray:
        """Summed-area table (h+1, w+1) for O(1) tissue fraction of any box."""
        ii = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int32)
        inner = ii[1:, 1:]  # sums in place: no int32 temporaries of the mask's size
        np.cumsum(self.mask, axis=0, dtype=np.int32, out=inner)
        np.cumsum(inner, axis=1, dtype=np.int32, out=inner)
        return ii


def _saturation_of(mx: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """HSV saturation from max and max − min of the channels in [0, 1] (the one formula)."""
    return np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)


def hsv_sv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees), saturation and value of an RGB uint8 image, float32."""
    x = rgb.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    delta = mx - mn
    s = _saturation_of(mx, delta)
    d = np.maximum(delta, 1e-6)
    h = np.select(
        [mx == r, mx == g],
        [((g - b) / d) % 6.0, (b - r) / d + 2.0],
        (r - g) / d + 4.0,
    )
    h = np.where(delta > 0, h * 60.0, 0.0)
    return h.astype(np.float32), s.astype(np.float32), mx.astype(np.float32)


@functools.cache
def _saturation_table() -> np.ndarray:
    """Saturation of every (max, min) channel pair, flat index 256·max + min (float32).

    Saturation depends on a pixel's largest and smallest channel only, and `hsv_sv` maps each
    uint8 value to one float32, so this table holds exactly the values `hsv_sv` computes."""
    x = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
    mx = np.repeat(x, 256).reshape(256, 256)
    mn = np.tile(x, 256).reshape(256, 256)
    return _saturation_of(mx, mx - mn).astype(np.float32).ravel()


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of an RGB uint8 image (float32), equal to `hsv_sv(rgb)[1]`, by table."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    idx = np.maximum(np.maximum(r, g), b).astype(np.uint16)
    idx <<= 8
    idx |= np.minimum(np.minimum(r, g), b)
    return _saturation_table()[idx]


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel optical density -log10(I/I0), I0 = 255 (Beer–Lambert; stain amount)."""
    return -np.log10((rgb.astype(np.float32) + 1.0) / 256.0)


@functools.cache
def _optical_density_table() -> tuple[np.ndarray, np.ndarray]:
    od = optical_density(np.arange(256, dtype=np.uint8))
    return od + np.float32(0.0), od  # first channel: 0 + od, as numpy's sum starts (−0 → +0)


def mean_optical_density(rgb: np.ndarray) -> np.ndarray:
    """`optical_density(rgb).mean(-1)` bit for bit, by table: numpy's mean over the channels is
    ((0 + r) + g) + b, then / 3, in float32 (checked over all 2^24 colours when written)."""
    first, od = _optical_density_table()
    out = first[rgb[..., 0]]
    out += od[rgb[..., 1]]
    out += od[rgb[..., 2]]
    out /= 3.0
    return out


def _otsu_of_histogram(hist: np.ndarray, edges: np.ndarray) -> float:
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]."""
    if values.size == 0:
        return 1.0
    return _otsu_of_histogram(*np.histogram(values, bins=bins, range=(0.0, 1.0)))


def _pen_of_hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    blue = (h >= 190) & (h < 250) & (s > 0.45) & (v < 0.95)
    green = (h >= 70) & (h < 170) & (s > 0.3)
    black = v < 0.16
    return blue | green | black


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Marker ink: saturated blue or green, or near-black. Stains are never this saturated+hued.

    Hematoxylin sits at 240–300° (purple), eosin 300–360°, DAB 10–45°; blue ink 190–250° with high
    saturation and green ink 70–170°.
    """
    return _pen_of_hsv(*hsv_sv(rgb))


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r


# ---- streaming: everything below works on bounded blocks of whole rows ----------------------
# Segmentation keeps only the thumbnail, the mask it returns (bool) and the pen marks packed to
# bits; every float image (saturation, optical density, their 3×3 means) and every label image
# exists one block of rows at a time. Block results are bit-identical to whole-image ones: per
# pixel values do not depend on the block, the 3×3 mean of these values is exact (window sums of
# float32 values spanning < 40 bits are exact in float64), morphology sees the rows it reaches
# (a halo), and connected components are joined across block edges with a union-find.

SEG_BLOCK_PX = 1 << 18  # pixels per block (rounded to whole rows): bounds the temporaries


def _block_rows(width: int, rows: int | None) -> int:
    return max(1, int(rows)) if rows else max(8, SEG_BLOCK_PX // max(width, 1))


def _blocks(height: int, rows: int):
    for y0 in range(0, height, rows):
        yield y0, min(height, y0 + rows)


def _mean3(sub: np.ndarray, top: int, n: int) -> np.ndarray:
    """`ndi.uniform_filter(image, 3)` of rows [top, top + n) of `sub` (float32), where `sub` holds
    those rows plus the row above and below (when they exist in the image)."""
    rows = ndi.uniform_filter1d(sub, 3, axis=0)[top : top + n]
    return ndi.uniform_filter1d(rows, 3, axis=1)


def _rows_with_halo(img: np.ndarray, y0: int, y1: int, halo: int, fill=0) -> tuple[np.ndarray, int]:
    """Rows [y0 - halo, y1 + halo) of `img`, rows outside the image = `fill`; and the core's
    first row index in it (= halo)."""
    h = img.shape[0]
    out = np.full((y1 - y0 + 2 * halo, *img.shape[1:]), fill, img.dtype)
    a, b = max(0, y0 - halo), min(h, y1 + halo)
    out[a - (y0 - halo) : b - (y0 - halo)] = img[a:b]
    return out, halo


class _SaturationStats:
    """The background saturation threshold, from statistics gathered block by block: count,
    min, max, then the 128-bin histogram over [min, max] that multi-Otsu uses, and the 256-bin
    [0, 1] histogram of the Otsu fallback.

    The threshold is the lowest multi-Otsu (3-class) split: glass | light tissue | strongly
    stained. Two-class Otsu puts its split between light tissue and strong stain (DAB, dense
    nuclei) when those dominate, losing pale IHC tissue; the lowest of three splits sits above
    the glass."""

    def __init__(self) -> None:
        self.n = 0
        self.lo: np.floating | None = None
        self.hi: np.floating | None = None
        self.otsu_hist = np.zeros(256, np.int64)
        self.otsu_edges: np.ndarray | None = None
        self.hist = np.zeros(128, np.int64)
        self.edges: np.ndarray | None = None

    def add_range(self, v: np.ndarray) -> None:
        if v.size == 0:
            return
        self.n += v.size
        lo, hi = v.min(), v.max()
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        hist, self.otsu_edges = np.histogram(v, bins=256, range=(0.0, 1.0))
        self.otsu_hist += hist

    @property
    def needs_histogram(self) -> bool:
        return not (self.n < 64 or float(self.hi - self.lo) < 1e-3)

    def add_histogram(self, v: np.ndarray) -> None:
        if v.size:
            hist, self.edges = np.histogram(v, bins=128, range=(self.lo, self.hi))
            self.hist += hist

    def threshold(self, floor: float) -> float:
        from skimage.filters import threshold_multiotsu

        if not self.needs_histogram:
            return max(floor, float(self.hi) + 1e-3 if self.n else 1.0)
        centers = (self.edges[:-1] + self.edges[1:]) / 2.0  # as skimage.exposure.histogram
        try:
            prob = self.hist / np.sum(self.hist)
            t = float(threshold_multiotsu(hist=(prob, centers), classes=3)[0])
        except ValueError:  # too few distinct values for three classes
            t = _otsu_of_histogram(self.otsu_hist, self.otsu_edges)
        return max(floor, t)


class _ValueCounts:
    """Distinct values and their counts (sorted), merged block by block. Optical density is a
    function of the pixel's RGB, so the table is bounded by the colours, not the pixels."""

    def __init__(self) -> None:
        self.merged = (np.zeros(0, np.float32), np.zeros(0, np.int64))
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending = 0

    def add(self, v: np.ndarray) -> None:
        if v.size:
            self.parts.append(np.unique(v, return_counts=True))
            self.pending += self.parts[-1][0].size
            if self.pending > max(1 << 20, self.merged[0].size):
                self.merged = self.table()
                self.parts, self.pending = [], 0

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.merged, *self.parts] if self.merged[0].size else self.parts
        if len(parts) <= 1:
            return parts[0] if parts else self.merged
        u, inv = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
        counts = np.bincount(inv, weights=np.concatenate([p[1] for p in parts]))
        return u, counts.astype(np.int64)


def _middle(vals: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The one (odd count) or two (even count) middle order statistics of a value table: what
    `np.median` and `np.percentile(·, 50)` of the expanded values interpolate between."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    ks = [(n - 1) // 2] if n % 2 else [n // 2 - 1, n // 2]
    return vals[np.searchsorted(cum, ks, side="right")]


def _glass_level_of_table(vals: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    if counts.sum() == 0:
        return 0.0, 0.0
    p50 = np.percentile(_middle(vals, counts), 50)
    low = vals <= p50
    lv, lc = vals[low], counts[low]
    rng = (lv.min(), lv.max()) if lv.size else None
    hist, edges = np.histogram(lv, bins=200, range=rng, weights=lc)
    bg = min(float(edges[int(np.argmax(hist))] + (edges[1] - edges[0]) / 2), 0.1)
    near = np.abs(vals - bg) < 0.03
    nv, nc = vals[near], counts[near]
    if not nv.size:
        return bg, 0.0
    dev = np.abs(nv - np.median(_middle(nv, nc)))
    order = np.argsort(dev, kind="stable")
    noise = float(1.4826 * np.median(_middle(dev[order], nc[order])))
    return bg, noise


def glass_level(od: np.ndarray) -> tuple[float, float]:
    """(OD of the glass, its noise): the dominant low optical density and its robust spread.

    Glass is near-transparent: a "background" denser than 0.1 means tissue fills the image, so
    the level is capped there. The median, the histogram of the lower half and the median
    absolute deviation are computed on a table of distinct values (same numbers as on the
    values themselves), which segmentation fills block by block.
    """
    table = _ValueCounts()
    table.add(od[np.isfinite(od)].ravel())
    return _glass_level_of_table(*table.table())


class _Components:
    """4-connected components of a bool image seen block by block (top to bottom): per block
    `ndi.label`, joined across block edges (union-find over the block labels). Gives each
    component's size and whether it touches the image border; `ids(...)` maps a block's labels
    (computed again, identically) to component indices."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.sizes: list[np.ndarray] = []
        self.border: list[np.ndarray] = []
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.offsets: list[int] = []
        self.n = 0
        self._last: np.ndarray | None = None

    def add(self, fg: np.ndarray, y0: int, y1: int) -> None:
        lab, n = ndi.label(fg)
        off = self.n
        self.offsets.append(off)
        if n:
            self.sizes.append(np.bincount(lab.ravel(), minlength=n + 1)[1:])
            edge = np.zeros(n + 1, bool)
            edge[lab[:, 0]] = edge[lab[:, -1]] = True
            if y0 == 0:
                edge[lab[0]] = True
            if y1 == self.height:
                edge[lab[-1]] = True
            self.border.append(edge[1:])
        first = lab[0].astype(np.int64) + (off - 1)
        if self._last is not None:
            both = (self._last >= 0) & (lab[0] > 0)
            pairs = np.unique(np.stack([self._last[both], first[both]], 1), axis=0)
            self.pairs.append((pairs[:, 0], pairs[:, 1]))
        self._last = np.where(lab[-1] > 0, lab[-1].astype(np.int64) + (off - 1), -1)
        self.n += n

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(component of each block label, component sizes, component touches the border)."""
        if self.n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
        a = np.concatenate([p[0] for p in self.pairs] + [np.zeros(0, np.int64)])
        b = np.concatenate([p[1] for p in self.pairs] + [np.zeros(0, np.int64)])
        graph = coo_matrix((np.ones(a.size, np.int32), (a, b)), shape=(self.n, self.n))
        _, comp = connected_components(graph, directed=False)
        sizes = np.bincount(comp, weights=np.concatenate(self.sizes)).astype(np.int64)
        border = np.bincount(comp, weights=np.concatenate(self.border)) > 0
        return comp, sizes, border


def _close(mask: np.ndarray, radius: int, rows: int) -> None:
    """Binary closing with a disk of `radius`, zero outside the image, in place, by blocks."""
    h, w = mask.shape
    halo = 2 * radius  # the erosion reaches `radius` rows into the dilation, which reaches more
    disk = _disk(radius)
    pad = radius + 1
    above = np.zeros((0, w), bool)  # the raw rows just above the block (already overwritten)
    for y0, y1 in _blocks(h, rows):
        n = y1 - y0
        win = np.zeros((n + 2 * halo, w + 2 * pad), bool)
        win[halo - above.shape[0] : halo, pad:-pad] = above
        below = min(h, y1 + halo)
        win[halo : halo + below - y0, pad:-pad] = mask[y0:below]
        above = np.concatenate([above, mask[y0:y1]])[-halo:]
        mask[y0:y1] = ndi.binary_closing(win, structure=disk)[halo : halo + n, pad:-pad]


def clean_mask(
    mask: np.ndarray, px_mm2: float, params: TissueParams, mpp: float, rows: int | None = None
) -> np.ndarray:
    """Close gaps, fill small holes, drop tiny blobs (sizes from µm / mm² to pixels).

    Works IN PLACE on `mask` and returns it; blocks of `rows` rows (default: a bounded number of
    pixels) keep the label images small."""
    h, w = mask.shape
    rows = _block_rows(w, rows)
    radius = int(round(params.close_um / mpp))
    if radius >= 1:
        _close(mask, radius, rows)
    # fill holes smaller than max_hole_mm2 (big holes, e.g. lumens, stay)
    holes = _Components(h)
    for y0, y1 in _blocks(h, rows):
        holes.add(~mask[y0:y1], y0, y1)
    comp, sizes, border = holes.finish()
    fill = (sizes * px_mm2 < params.max_hole_mm2) & ~border
    blobs = _Components(h)
    for k, (y0, y1) in enumerate(_blocks(h, rows)):
        lab, n = ndi.label(~mask[y0:y1])
        if n:
            off = holes.offsets[k]
            lut = np.zeros(n + 1, bool)
            lut[1:] = fill[comp[off : off + n]]
            mask[y0:y1] |= lut[lab]
        blobs.add(mask[y0:y1], y0, y1)
    comp, sizes, _ = blobs.finish()
    keep = sizes * px_mm2 >= params.min_blob_mm2
    for k, (y0, y1) in enumerate(_blocks(h, rows)):
        lab, n = ndi.label(mask[y0:y1])
        lut = np.zeros(n + 1, bool)
        off = blobs.offsets[k]
        lut[1:] = keep[comp[off : off + n]]
        mask[y0:y1] = lut[lab]
    return mask


def _unpack_rows(packed: np.ndarray, y0: int, y1: int, width: int, halo: int) -> np.ndarray:
    rows, _ = _rows_with_halo(packed, y0, y1, halo)
    return np.unpackbits(rows, axis=1, count=width).view(bool)


def segment_rgb(
    rgb: np.ndarray, mpp: float, params: TissueParams, rows: int | None = None
) -> tuple[np.ndarray, float, float]:
    """Tissue mask of an RGB image at `mpp` µm/px → (mask, saturation threshold, pen share).

    Three passes over blocks of `rows` rows (default: a bounded number of pixels per block):
    (1) pen marks, the saturation range and the optical-density value table; (2) the
    saturation histogram; (3) the mask; then `clean_mask` in place. Memory beyond the image and
    the mask: the pen marks as bits, the value table, one block of temporaries."""
    h, w = rgb.shape[:2]
    rows = _block_rows(w, rows)
    pen_bits = np.zeros((h, (w + 7) // 8), np.uint8)
    n_pen = 0
    sat = _SaturationStats()
    od_table = _ValueCounts()
    for y0, y1 in _blocks(h, rows):  # pass 1
        a, b = max(0, y0 - 1), min(h, y1 + 1)
        hue, s_px, v = hsv_sv(rgb[a:b])
        s = _mean3(s_px, y0 - a, y1 - y0)  # pixel noise/JPEG speckle must not decide
        keep = np.ones(s.shape, bool)
        if params.pen_filter:
            core = slice(y0 - a, y1 - a)
            pen = _pen_of_hsv(hue[core], s_px[core], v[core])
            pen_bits[y0:y1] = np.packbits(pen, axis=1)
            n_pen += int(np.count_nonzero(pen))
            keep = ~pen
        del hue, s_px, v
        sat.add_range(s[keep])
        od_px = mean_optical_density(rgb[y0:y1])[keep]
        od_table.add(od_px[np.isfinite(od_px)])
    if sat.needs_histogram:  # pass 2
        for y0, y1 in _blocks(h, rows):
            a, b = max(0, y0 - 1), min(h, y1 + 1)
            s = _mean3(saturation(rgb[a:b]), y0 - a, y1 - y0)
            pen = _unpack_rows(pen_bits, y0, y1, w, 0)
            sat.add_histogram(s[~pen])
    thr = sat.threshold(params.min_saturation)
    contrast = None
    if params.min_od_contrast > 0:
        # pale counterstain, sparse strands (alveolar septa, fat membranes): denser than the
        # glass. Per pixel, not 3×3-averaged: a one-pixel septum would be diluted below the
        # threshold; isolated noisy pixels are dropped by the blob-size rule in `clean_mask`.
        bg, noise = _glass_level_of_table(*od_table.table())
        contrast = bg + max(params.min_od_contrast, 5.0 * noise)
    del od_table
    mask = np.empty((h, w), bool)
    for y0, y1 in _blocks(h, rows):  # pass 3
        a, b = max(0, y0 - 1), min(h, y1 + 1)
        s = _mean3(saturation(rgb[a:b]), y0 - a, y1 - y0)
        od_sub = mean_optical_density(rgb[a:b])
        od = _mean3(od_sub, y0 - a, y1 - y0)
        m = (s >= thr) & (od >= params.min_od)
        if contrast is not None:
            m |= od_sub[y0 - a : y1 - a] >= contrast
        if n_pen:  # ink edges are antialiased: grow the pen area a little
            pen, top = _unpack_rows(pen_bits, y0, y1, w, 2), 2
            m &= ~pen[top : top + y1 - y0]
            m &= ~ndi.binary_dilation(pen, iterations=2)[top : top + y1 - y0]
        mask[y0:y1] = m
    del pen_bits
    px_mm2 = (mpp / 1000.0) ** 2
    return clean_mask(mask, px_mm2, params, mpp, rows), thr, n_pen / (h * w)


def segment_tissue(wsi, params: TissueParams | None = None) -> TissueMask:
    """Segment the slide at ~`params.seg_mpp` µm/px; no tissue → SlideError naming the slide."""
    params = params or TissueParams()
    downsample = max(1.0, params.seg_mpp / wsi.mpp)
    thumb = wsi.read_downsampled(downsample)
    mpp = wsi.mpp * downsample
    mask, thr, pen = segment_rgb(thumb, mpp, params)
    if not mask.any():
        raise SlideError(
            f"no tissue found in {wsi.path}",
            hint="check the slide is not blank; for pale stains lower --min-saturation",
        )
    return TissueMask(
        mask=mask, thumb=thumb, downsample=downsample, mpp=mpp, threshold=thr, pen_fraction=pen
    )


QC_PNG_MIN_SIDE = 1000  # px, long side of a QC picture (or the whole slide when it is smaller)
QC_OUTLINE = (0, 230, 0)  # the tissue outline's colour: no stain is this green


def qc_image(
    wsi,
    mask: TissueMask,
    coords: np.ndarray | None = None,
    patch_size_level0: float | None = None,
    min_side: int = QC_PNG_MIN_SIDE,
    max_side: int = 2000,
) -> Image.Image:
    """The slide re-read at a long side of ≥ `min_side` px (the slide's own size when smaller;
    the mask's size up to `max_side` when larger), the tissue mask's outline in green, the
    kept patches as blue boxes, a title strip on top.

    The mask itself is computed at ~8 µm/px (a few hundred px for a small slide); drawing it on
    that image gives a picture too coarse to judge an outline, hence the re-read.
    """
    long0 = max(wsi.width, wsi.height)
    target = min(long0, max(min_side, min(max_side, max(mask.mask.shape))))
    ds = long0 / float(target)
    rgb = wsi.read_downsampled(ds)
    h, w = rgb.shape[:2]
    m = Image.fromarray(mask.mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)
    m = np.asarray(m) >= 128
    out = rgb.copy()  # tissue keeps its colours: only the outline is drawn on it
    width = max(2, int(round(max(h, w) / 500)))
    edge = m & ~ndi.binary_erosion(m, iterations=width, border_value=0)
    out[edge] = QC_OUTLINE
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    if coords is not None and patch_size_level0:
        side = float(patch_size_level0) / ds
        for x, y in np.asarray(coords, dtype=np.float64)[:5000] / ds:
            draw.rectangle([x, y, x + side, y + side], outline=(30, 60, 255), width=1)
    n = 0 if coords is None else len(coords)
    title = (
        f"{Path(str(wsi.path)).name}: {mask.area_mm2():.2f} mm² tissue "
        f"({mask.tissue_fraction:.0%} of the slide), {n} patches, {wsi.mpp:.3g} µm/px"
    )
    return _with_title(img, title)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib: has µ and ²), else Pillow's own font."""
    import matplotlib

    try:
        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(ttf), size)
    except OSError:
        return ImageFont.load_default(size=size)


def _with_title(img: Image.Image, title: str) -> Image.Image:
    size = max(14, img.width // 60)
    font = _font(size)
    band = size + 12
    framed = Image.new("RGB", (img.width, img.height + band), "white")
    framed.paste(img, (0, band))
    ImageDraw.Draw(framed).text((6, 5), title, fill="black", font=font)
    return framed


def save_qc_png(
    wsi,
    mask: TissueMask,
    path: str | Path,
    coords: np.ndarray | None = None,
    patch_size_level0: float | None = None,
    min_side: int = QC_PNG_MIN_SIDE,
) -> Path:
    """Write `qc_image` as a PNG (atomically); returns its path."""
    img = qc_image(wsi, mask, coords, patch_size_level0, min_side)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=False)
    return path


def tissue_fraction_boxes(
    mask: TissueMask, xs: np.ndarray, ys: np.ndarray, size0: float
) -> np.ndarray:
    """Tissue fraction of level-0 boxes (x, y, size0 × size0) from the mask's summed-area table."""
    ii = mask.integral()
    h, w = mask.mask.shape
    d = mask.downsample
    x0 = np.clip(np.floor(xs / d).astype(np.int64), 0, w)
    y0 = np.clip(np.floor(ys / d).astype(np.int64), 0, h)
    x1 = np.clip(np.maximum(np.ceil((xs + size0) / d).astype(np.int64), x0 + 1), 0, w)
    y1 = np.clip(np.maximum(np.ceil((ys + size0) / d).astype(np.int64), y0 + 1), 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    s = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    return s / area


__all__ = [
    "TissueParams",
    "TissueMask",
    "segment_tissue",
    "segment_rgb",
    "save_qc_png",
    "qc_image",
    "QC_PNG_MIN_SIDE",
    "tissue_fraction_boxes",
    "optical_density",
    "mean_optical_density",
    "saturation",
    "glass_level",
    "pen_mask",
    "otsu",
]
