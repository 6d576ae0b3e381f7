"""tifffile backend: TIFF/SVS pyramids read tile by tile with tifffile + imagecodecs, no OpenSlide.

Why a second backend: it needs no native OpenSlide library and shows the reader interface is
real (cuCIM or DICOM readers plug in the same way). Pyramid levels are found by their SHAPES,
not by page order: the largest RGB page is level 0 and every smaller tiled page with the same
aspect ratio is a level. Page order lies — an Aperio file's second page is usually a stripped
thumbnail, but the synthetic "Aperio" slides have none, so "page 1 = thumbnail" would drop a
real level. Stripped pages below level 0 (thumbnail, label, macro) are never levels, as in
OpenSlide.

Level-0 pixels equal OpenSlide's: JPEG tiles are decoded in the colour space their TIFF
photometric tag states (Aperio's "JPEG/RGB" tiles hold RGB, not YCbCr), like OpenSlide does.
What this reader cannot decode exactly is refused with a hint to use OpenSlide.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import imagecodecs
import numpy as np
import tifffile

from cscl.errors import SlideError
from cscl.wsi.readers.base import (
    CORRUPT_HINT,
    SlideInfo,
    SlideReader,
    UnsupportedSlide,
    downsamples_of,
)
from cscl.wsi.readers.registry import register_reader

_USE_OPENSLIDE = "read it with --reader openslide (or auto)"
_JPEG, _APERIO_J2K_RGB, _JPEG2000 = 7, 33005, 34712
_REFUSED_COMPRESSION = {33003: "Aperio JPEG 2000 YCbCr", 33004: "Aperio JPEG 2000 RGB (old)", 6: "old-style JPEG"}  # fmt: skip
_RGB, _YCBCR = int(tifffile.PHOTOMETRIC.RGB), int(tifffile.PHOTOMETRIC.YCBCR)
_JCS_RGB, _JCS_YCBCR = 2, 3  # libjpeg colour spaces
CACHE_TILES = 256  # decoded tiles kept per open slide (~50 MB of 256² RGB tiles)


@dataclass
class _Tiff:
    """An open file, its pyramid pages (level 0 first) and a small decoded-tile cache."""

    tif: tifffile.TiffFile
    levels: list[tifffile.TiffPage]
    cache: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        self.tif.close()


def _size(page) -> tuple[int, int]:
    return int(page.imagewidth), int(page.imagelength)


def _is_rgb8(page) -> bool:
    return (
        page.dtype == np.uint8
        and page.samplesperpixel in (3, 4)
        and int(page.photometric) in (_RGB, _YCBCR)
        and int(page.planarconfig) == 1
        and page.imagedepth == 1
    )


def pyramid_pages(tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    """Level 0 = the largest RGB page; levels = smaller TILED pages of the same aspect ratio."""
    seen: set[int] = set()
    pages = []
    for page in [*tif.pages, *(lvl.keyframe for s in tif.series for lvl in s.levels[1:])]:
        if isinstance(page, tifffile.TiffPage) and page.offset not in seen and _is_rgb8(page):
            seen.add(page.offset)
            pages.append(page)
    if not pages:
        return []
    base = max(pages, key=lambda p: _size(p)[0] * _size(p)[1])
    w0, h0 = _size(base)
    levels = {(w0, h0): base}
    for page in pages:
        w, h = _size(page)
        if not page.is_tiled or w >= w0 or (w, h) in levels:
            continue
        if abs(h - h0 * w / w0) <= max(2.0, 0.01 * h):  # same aspect: a level, not a label
            levels[(w, h)] = page
    return [levels[k] for k in sorted(levels, key=lambda wh: -wh[0])]


def _aperio_fields(description: str) -> dict[str, str]:
    out = {}
    for part in description.split("|")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            out[f"aperio.{key.strip()}"] = value.strip()
    return out


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@register_reader("tifffile", priority=20)
class TiffFileReader(SlideReader):
    """TIFF and Aperio SVS pyramids (JPEG, JPEG 2000 RGB, LZW/Deflate/none tiles) via tifffile."""

    def _open(self) -> _Tiff:
        try:
            tif = tifffile.TiffFile(str(self.path))
        except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error…
            raise UnsupportedSlide(
                f"{self.path} is not a TIFF slide tifffile can read ({exc})", hint=_USE_OPENSLIDE
            ) from exc
        try:
            levels = pyramid_pages(tif)
            if not levels:
                raise UnsupportedSlide(
                    f"{self.path} has no 8-bit RGB image tifffile can read", hint=_USE_OPENSLIDE
                )
            for page in levels:
                comp = int(page.compression)
                if comp in _REFUSED_COMPRESSION:
                    raise UnsupportedSlide(
                        f"{self.path}: {_REFUSED_COMPRESSION[comp]} tiles are not supported by "
                        "the tifffile reader",
                        hint=_USE_OPENSLIDE,
                    )
                if int(page.photometric) == _YCBCR and comp != _JPEG:
                    raise UnsupportedSlide(
                        f"{self.path}: YCbCr tiles without JPEG compression are not supported "
                        "by the tifffile reader",
                        hint=_USE_OPENSLIDE,
                    )
        except Exception:
            tif.close()
            raise
        return _Tiff(tif, levels)

    def _info(self, t: _Tiff) -> SlideInfo:
        return tiff_info(t.tif, t.levels)

    def _read(self, t: _Tiff, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        page = t.levels[level]
        ds = self.level_downsamples[level]
        lx, ly = (x, y) if level == 0 else (int(round(x / ds)), int(round(y / ds)))
        lw, lh = _size(page)
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        ch, cw = int(page.chunks[0]), int(page.chunks[1])  # tile, or strip (rows, width)
        across = int(page.chunked[1])
        for ty in range(y0 // ch, (y1 - 1) // ch + 1):
            for tx in range(x0 // cw, (x1 - 1) // cw + 1):
                tile = self._chunk(t, level, ty * across + tx)
                # intersection of this chunk with the wanted region, in level px
                ax0, ay0 = max(x0, tx * cw), max(y0, ty * ch)
                ax1 = min(x1, tx * cw + tile.shape[1])
                ay1 = min(y1, ty * ch + tile.shape[0])
                if ax1 > ax0 and ay1 > ay0:
                    out[ay0 - ly : ay1 - ly, ax0 - lx : ax1 - lx] = tile[
                        ay0 - ty * ch : ay1 - ty * ch, ax0 - tx * cw : ax1 - tx * cw
                    ]
        return out

    def _chunk(self, t: _Tiff, level: int, index: int) -> np.ndarray:
        """Decoded RGB tile/strip `index` of `level` (cached)."""
        key = (level, index)
        with t.lock:
            if key in t.cache:
                t.cache.move_to_end(key)
                return t.cache[key]
            page = t.levels[level]
            try:
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if count == 0:  # sparse tile: nothing scanned there
                    rgb = np.full((*page.chunks[:2], 3), 255, np.uint8)
                else:
                    fh = t.tif.filehandle
                    with fh.lock:
                        fh.seek(offset)
                        data = fh.read(count)
                    rgb = _decode(page, data, index)
            except Exception as exc:
                raise SlideError(
                    f"cannot read {self.path} at level {level} (tile {index}): {exc}",
                    hint=CORRUPT_HINT,
                ) from exc
            t.cache[key] = rgb
            if len(t.cache) > CACHE_TILES:
                t.cache.popitem(last=False)
            return rgb


def tiff_info(tif: tifffile.TiffFile, levels: list[tifffile.TiffPage]) -> SlideInfo:
    """Geometry of `levels` and the header facts (Aperio fields, or XResolution for a generic
    TIFF); other TIFF-based backends (cuCIM) take mpp/vendor from here so all agree."""
    desc = tif.pages[0].description or ""
    dims = tuple(_size(p) for p in levels)
    props = {"tiff.ImageDescription": desc}
    if desc.startswith("Aperio"):
        props.update(_aperio_fields(desc))
        mpp, key = _float(props.get("aperio.MPP")), "aperio.MPP"
        mag = _float(props.get("aperio.AppMag"))
        vendor = "aperio"
    else:
        mpp, key, mag, vendor = _tiff_mpp(levels[0]), "tiff.XResolution", None, "generic-tiff"
    return SlideInfo(
        level_dimensions=dims,
        level_downsamples=downsamples_of(dims),
        vendor=vendor,
        file_mpp=mpp,
        mpp_key=key,
        objective_power=mag,
        properties=props,
    )


def _decode(page, data: bytes, index: int) -> np.ndarray:
    comp = int(page.compression)
    if comp == _JPEG:
        cs = _JCS_RGB if int(page.photometric) == _RGB else _JCS_YCBCR
        arr = imagecodecs.jpeg8_decode(
            data, tables=page.jpegtables, colorspace=cs, outcolorspace=_JCS_RGB
        )
    elif comp in (_APERIO_J2K_RGB, _JPEG2000):
        arr = imagecodecs.jpeg2k_decode(data)
    else:  # uncompressed, LZW, Deflate, Zstd…: tifffile handles predictors and bit layouts
        seg, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        arr = np.asarray(seg).reshape(shape[-3:]) if seg.ndim > 3 else seg
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"decoded tile has shape {arr.shape}, expected (h, w, 3)")
    return np.ascontiguousarray(arr[..., :3])


def _tiff_mpp(page) -> float | None:
    """µm/px from XResolution in centimetres or inches (as OpenSlide reads generic TIFFs); the
    plausibility rule in `resolve_mpp` then drops software defaults such as 72 dpi."""
    tag = page.tags.get("XResolution")
    unit = int(page.resolutionunit)
    per_unit = {int(tifffile.RESUNIT.CENTIMETER): 1e4, int(tifffile.RESUNIT.INCH): 25_400.0}
    if tag is None or unit not in per_unit:
        return None
    num, den = tag.value
    return per_unit[unit] * den / num if num else None
