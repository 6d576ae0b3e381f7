"""Tissue segmentation on a low-resolution image of the slide (a few µm/px).

Two cues, either one marks tissue: (1) Otsu on HSV saturation finds stained tissue on H&E and on
IHC (hematoxylin + DAB) alike, with an optical-density floor that drops faintly tinted glass;
(2) optical density clearly above the slide's own glass level finds what is barely saturated —
the pale hematoxylin counterstain of IHC (saturation ~0.04, as low as tinted glass, but OD ~0.09
against ~0.02 for glass on the real rat-kidney PanCytokeratin section) and thin strands of
sparse tissue (lung, fat, loose connective tissue). Pen ink (strongly saturated blue/green, near
black) is removed before morphology, then small holes are filled and tiny blobs dropped. Sizes are
given in µm so the result does not depend on the scanner's resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

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
        ii[1:, 1:] = self.mask.astype(np.int32).cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
        return ii


def hsv_sv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees), saturation and value of an RGB uint8 image, float32."""
    x = rgb.astype(np.float32) / 255.0
    mx, mn = x.max(-1), x.min(-1)
    delta = mx - mn
    s = np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    d = np.maximum(delta, 1e-6)
    h = np.select(
        [mx == r, mx == g],
        [((g - b) / d) % 6.0, (b - r) / d + 2.0],
        (r - g) / d + 4.0,
    )
    h = np.where(delta > 0, h * 60.0, 0.0)
    return h.astype(np.float32), s.astype(np.float32), mx.astype(np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel optical density -log10(I/I0), I0 = 255 (Beer–Lambert; stain amount)."""
    return -np.log10((rgb.astype(np.float32) + 1.0) / 256.0)


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]."""
    if values.size == 0:
        return 1.0
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Marker ink: saturated blue or green, or near-black. Stains are never this saturated+hued.

    Hematoxylin sits at 240–300° (purple), eosin 300–360°, DAB 10–45°; blue ink 190–250° with high
    saturation and green ink 70–170°.
    """
    h, s, v = hsv_sv(rgb)
    blue = (h >= 190) & (h < 250) & (s > 0.45) & (v < 0.95)
    green = (h >= 70) & (h < 170) & (s > 0.3)
    black = v < 0.16
    return blue | green | black


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r


def clean_mask(mask: np.ndarray, px_mm2: float, params: TissueParams, mpp: float) -> np.ndarray:
    """Close gaps, fill small holes, drop tiny blobs (sizes from µm / mm² to pixels)."""
    radius = int(round(params.close_um / mpp))
    if radius >= 1:
        pad = radius + 1
        m = np.pad(mask, pad)
        m = ndi.binary_closing(m, structure=_disk(radius))
        mask = m[pad:-pad, pad:-pad]
    # fill holes smaller than max_hole_mm2 (big holes, e.g. lumens, stay)
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


def _features(rgb: np.ndarray, pen_filter: bool, rows: int = 256):
    """Saturation, mean OD and pen mask, computed in row blocks so the float temporaries stay
    small whatever the thumbnail size."""
    h, w = rgb.shape[:2]
    s = np.empty((h, w), np.float32)
    od = np.empty((h, w), np.float32)
    pen = np.zeros((h, w), bool)
    for y in range(0, h, rows):
        block = rgb[y : y + rows]
        s[y : y + rows] = hsv_sv(block)[1]
        od[y : y + rows] = optical_density(block).mean(-1)
        if pen_filter:
            pen[y : y + rows] = pen_mask(block)
    return s, od, pen


def background_threshold(values: np.ndarray, floor: float) -> float:
    """Lowest multi-Otsu (3-class) threshold: glass | light tissue | strongly stained.

    Two-class Otsu puts its split between light tissue and strong stain (DAB, dense nuclei) when
    those dominate, losing pale IHC tissue; the lowest of three splits sits above the glass.
    """
    from skimage.filters import threshold_multiotsu

    if values.size < 64 or float(values.max() - values.min()) < 1e-3:
        return max(floor, float(values.max()) + 1e-3 if values.size else 1.0)
    try:
        t = float(threshold_multiotsu(values, classes=3, nbins=128)[0])
    except ValueError:  # too few distinct values for three classes
        t = otsu(values)
    return max(floor, t)


def glass_level(od: np.ndarray) -> tuple[float, float]:
    """(OD of the glass, its noise): the dominant low optical density and its robust spread.

    Glass is near-transparent: a "background" denser than 0.1 means tissue fills the image, so
    the level is capped there.
    """
    v = od[np.isfinite(od)].ravel()
    if v.size == 0:
        return 0.0, 0.0
    low = v[v <= np.percentile(v, 50)]
    hist, edges = np.histogram(low, bins=200)
    bg = min(float(edges[int(np.argmax(hist))] + (edges[1] - edges[0]) / 2), 0.1)
    near = v[np.abs(v - bg) < 0.03]
    noise = float(1.4826 * np.median(np.abs(near - np.median(near)))) if near.size else 0.0
    return bg, noise


def segment_rgb(
    rgb: np.ndarray, mpp: float, params: TissueParams
) -> tuple[np.ndarray, float, float]:
    """Tissue mask of an RGB image at `mpp` µm/px → (mask, saturation threshold, pen share)."""
    s, od_px, pen = _features(rgb, params.pen_filter)
    s = ndi.uniform_filter(s, 3)  # pixel noise/JPEG speckle must not decide
    od = ndi.uniform_filter(od_px, 3)
    thr = background_threshold(s[~pen], params.min_saturation)
    mask = (s >= thr) & (od >= params.min_od)
    if params.min_od_contrast > 0:
        # pale counterstain, sparse strands (alveolar septa, fat membranes): denser than the
        # glass. Per pixel, not 3×3-averaged: a one-pixel septum would be diluted below the
        # threshold; isolated noisy pixels are dropped by the blob-size rule in `clean_mask`.
        bg, noise = glass_level(od_px[~pen])
        mask |= od_px >= bg + max(params.min_od_contrast, 5.0 * noise)
    mask &= ~pen
    if pen.any():  # ink edges are antialiased: grow the pen area a little
        mask &= ~ndi.binary_dilation(pen, iterations=2)
    px_mm2 = (mpp / 1000.0) ** 2
    return clean_mask(mask, px_mm2, params, mpp), thr, float(pen.mean())


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
    "glass_level",
    "pen_mask",
    "otsu",
]
