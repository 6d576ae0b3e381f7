"""OpenSlide backend (the default): Aperio, generic tiled TIFF, NDPI, MRXS, SCN, …

OpenSlide's own errors (unsupported format, a truncated tile) become `SlideError`s naming the
file; transparent pixels (outside the scanned area) come back white.
"""

from __future__ import annotations

import numpy as np
import openslide
from PIL import Image

from cscl.errors import SlideError
from cscl.wsi.readers.base import CORRUPT_HINT, SlideInfo, SlideReader, UnsupportedSlide
from cscl.wsi.readers.registry import register_reader


def _float(props, key: str) -> float | None:
    try:
        return float(props[key])
    except (KeyError, ValueError):
        return None


@register_reader("openslide", priority=10)
class OpenSlideReader(SlideReader):
    """`openslide.OpenSlide` behind the `SlideReader` interface."""

    def _open(self) -> openslide.OpenSlide:
        try:
            return openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise UnsupportedSlide(
                f"{self.path} is not a slide OpenSlide can read ({exc})",
                hint="supported: Aperio .svs, generic tiled TIFF, NDPI, MRXS, SCN, …",
            ) from exc
        except (openslide.OpenSlideError, OSError, Image.UnidentifiedImageError) as exc:
            raise SlideError(f"cannot open slide {self.path}: {exc}", hint=CORRUPT_HINT) from exc

    def _info(self, osr: openslide.OpenSlide) -> SlideInfo:
        props = osr.properties
        return SlideInfo(
            level_dimensions=tuple((int(w), int(h)) for w, h in osr.level_dimensions),
            level_downsamples=tuple(float(d) for d in osr.level_downsamples),
            vendor=str(props.get("openslide.vendor", "unknown")),
            file_mpp=_float(props, "openslide.mpp-x"),
            mpp_key="openslide.mpp-x",
            objective_power=_float(props, "openslide.objective-power"),
            properties=dict(props),
        )

    def _read(self, osr, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        try:
            rgba = np.asarray(osr.read_region((x, y), level, (w, h)))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise SlideError(
                f"cannot read {self.path} at level {level} ({x},{y} {w}x{h}): {exc}",
                hint=CORRUPT_HINT,
            ) from exc
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = 255  # transparent = outside the scanned area
        return rgb
