"""Open whole-slide images (local or s3://) through OpenSlide and resolve their resolution.

Every later step works in micrometres per pixel, so a slide whose mpp cannot be found is refused
here with an error that says how to supply it. OpenSlide's own errors (unsupported format, a
truncated tile) are turned into `SlideError`s that name the file.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cscl.errors import SlideError, StorageError
from cscl.io import storage

_MPP_HINT = "pass --mpp (single slide) or fill the manifest `mpp` column (µm/px at level 0)"
_CORRUPT_HINT = "the file may be truncated or corrupt: copy/download it again"


def cache_dir() -> Path:
    """Where slides fetched from S3 are kept (`CSCL_CACHE_DIR`, default ~/.cache/cscl/slides)."""
    root = os.environ.get("CSCL_CACHE_DIR") or Path.home() / ".cache" / "cscl"
    return Path(root) / "slides"


def fetch_slide(uri: str, endpoint_url: str | None = None) -> Path:
    """A local path for `uri`; s3:// objects are downloaded once (`storage.fetch`, ETag-keyed)."""
    return storage.fetch(uri) if storage.is_s3(uri) else storage.local_path(uri)


@dataclass
class WSI:
    """An open slide with its level-0 resolution resolved. Not picklable: workers reopen `path`."""

    path: Path
    uri: str
    mpp: float  # µm/px at level 0
    mpp_source: str  # "override" | "openslide.mpp-x" | "objective-power"
    osr: object = field(repr=False)

    @property
    def dimensions(self) -> tuple[int, int]:
        return tuple(self.osr.dimensions)

    @property
    def width(self) -> int:
        return int(self.osr.dimensions[0])

    @property
    def height(self) -> int:
        return int(self.osr.dimensions[1])

    @property
    def level_count(self) -> int:
        return int(self.osr.level_count)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(self.osr.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self.osr.level_downsamples)

    @property
    def vendor(self) -> str:
        return str(self.osr.properties.get("openslide.vendor", "unknown"))

    @property
    def magnification(self) -> float:
        """Objective power of level 0 (NaN when the file does not say)."""
        try:
            return float(self.osr.properties["openslide.objective-power"])
        except (KeyError, ValueError):
            return math.nan

    def best_level(self, downsample: float) -> int:
        """Coarsest level not coarser than `downsample` (1 % slack for 4.0003-style factors)."""
        return int(self.osr.get_best_level_for_downsample(downsample * 1.01))

    def read_region(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) at `level`, top-left in level-0 pixels; outside-slide = white."""
        return read_region_rgb(self.osr, self.path, x, y, level, w, h)

    def read_downsampled(self, downsample: float, tile: int = 1024) -> np.ndarray:
        """The whole slide at `downsample` (level-0 px per output px), assembled tile by tile.

        Reads from the best pyramid level in bounded tiles, so memory stays at the size of the
        output even for a slide without a pyramid.
        """
        out_w = max(1, int(math.ceil(self.width / downsample)))
        out_h = max(1, int(math.ceil(self.height / downsample)))
        level = self.best_level(downsample)
        lds = self.level_downsamples[level]
        f = downsample / lds  # level px per output px
        lw, lh = self.level_dimensions[level]
        out = np.full((out_h, out_w, 3), 255, np.uint8)
        for oy in range(0, out_h, tile):
            for ox in range(0, out_w, tile):
                tw, th = min(tile, out_w - ox), min(tile, out_h - oy)
                lx, ly = int(round(ox * f)), int(round(oy * f))
                rw = max(1, min(int(round(tw * f)), lw - lx))
                rh = max(1, min(int(round(th * f)), lh - ly))
                if rw <= 0 or rh <= 0 or lx >= lw or ly >= lh:
                    continue
                img = self.read_region(int(lx * lds), int(ly * lds), level, rw, rh)
                # the last tile may cover less than `tile` output px when the level ends early
                ow = min(tw, max(1, int(round(rw / f))))
                oh = min(th, max(1, int(round(rh / f))))
                if (rw, rh) != (ow, oh):
                    img = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BILINEAR))
                out[oy : oy + oh, ox : ox + ow] = img
        return out

    def close(self) -> None:
        self.osr.close()

    def __enter__(self) -> WSI:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_region_rgb(osr, path, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
    """OpenSlide read → RGB uint8; read failures (truncated tiles) become a SlideError."""
    import openslide

    try:
        rgba = np.asarray(osr.read_region((int(x), int(y)), int(level), (int(w), int(h))))
    except (openslide.OpenSlideError, OSError, ValueError) as exc:
        raise SlideError(
            f"cannot read {path} at level {level} ({x},{y} {w}x{h}): {exc}", hint=_CORRUPT_HINT
        ) from exc
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255  # transparent = outside the scanned area
    return rgb


def resolve_mpp(props, path: Path | str, mpp: float | None = None) -> tuple[float, str]:
    """Level-0 µm/px: explicit override > openslide.mpp-x > 10 / objective power (warns)."""
    if mpp is not None and not (isinstance(mpp, float) and math.isnan(mpp)):
        if not float(mpp) > 0:
            raise SlideError(f"mpp override for {path} must be > 0, got {mpp}", hint=_MPP_HINT)
        return float(mpp), "override"
    try:
        val = float(props["openslide.mpp-x"])
        if val > 0 and math.isfinite(val):
            return val, "openslide.mpp-x"
    except (KeyError, ValueError):
        pass
    try:
        mag = float(props["openslide.objective-power"])
        if mag > 0 and math.isfinite(mag):
            warnings.warn(
                f"{path}: no mpp in the file; assuming {10.0 / mag:.4g} µm/px from objective "
                f"power {mag:g}x ({_MPP_HINT} to be exact)",
                stacklevel=3,
            )
            return 10.0 / mag, "objective-power"
    except (KeyError, ValueError):
        pass
    raise SlideError(f"{path} states no resolution (no mpp, no objective power)", hint=_MPP_HINT)


def open_osr(path: Path):
    """openslide.OpenSlide(path) with errors that name the file."""
    import openslide

    if not path.exists():
        raise SlideError(f"slide file not found: {path}", hint="check the slide_uri / path")
    if not os.access(path, os.R_OK) or path.is_dir():
        raise SlideError(f"cannot read slide {path}: not a readable file")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideError(
            f"{path} is not a slide OpenSlide can read ({exc})",
            hint="supported: Aperio .svs, generic tiled TIFF, NDPI, MRXS, SCN, …",
        ) from exc
    except (openslide.OpenSlideError, OSError, Image.UnidentifiedImageError) as exc:
        raise SlideError(f"cannot open slide {path}: {exc}", hint=_CORRUPT_HINT) from exc


def open_slide(
    uri_or_path: str | os.PathLike, mpp: float | None = None, endpoint_url: str | None = None
) -> WSI:
    """Open a slide (local path, file:// or s3://) and resolve its level-0 mpp.

    The smallest pyramid level is read once so a truncated file fails here, not mid-extraction.
    """
    uri = str(uri_or_path)
    try:
        path = fetch_slide(uri, endpoint_url)
    except StorageError as exc:
        raise SlideError(f"cannot fetch slide {uri}: {exc.message}", hint=exc.hint) from exc
    osr = open_osr(path)
    try:
        value, source = resolve_mpp(osr.properties, path, mpp)
        lvl = osr.level_count - 1
        lw, lh = osr.level_dimensions[lvl]
        read_region_rgb(osr, path, 0, 0, lvl, min(lw, 64), min(lh, 64))
    except Exception:
        osr.close()
        raise
    return WSI(path=path, uri=uri, mpp=value, mpp_source=source, osr=osr)
