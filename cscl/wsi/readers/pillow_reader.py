"""Plain images (JPEG, PNG, BMP, non-pyramidal TIFF) as one-level slides, read with Pillow.

Why: serial-section registration data sets (ANHIR, the rat-kidney pair under shared/data/real)
and exported regions come as plain images, not scanner pyramids. Such an image states no
microscope resolution (its dpi is a software default), so `--mpp` / the manifest `mpp` column is
required, as for any uncalibrated slide. Tried last by `backend="auto"`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from cscl.errors import SlideError
from cscl.wsi.readers.base import CORRUPT_HINT, SlideInfo, SlideReader, UnsupportedSlide
from cscl.wsi.readers.registry import register_reader

MAX_PIXELS = 20_000 * 20_000  # decoded whole into memory: larger images belong in a pyramid


@register_reader("pillow", priority=90)
class PillowReader(SlideReader):
    """One decoded RGB array; regions are slices of it (white outside, like OpenSlide)."""

    def _open(self) -> np.ndarray:
        try:
            with Image.open(self.path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise SlideError(
                        f"{self.path} is a plain {im.width}×{im.height} image, too large to "
                        "decode whole",
                        hint="convert it to a tiled pyramidal TIFF (e.g. vips tiffsave --tile "
                        "--pyramid) and read that",
                    )
                self._dpi = im.info.get("dpi")
                return np.asarray(im.convert("RGB"))
        except UnidentifiedImageError as exc:
            raise UnsupportedSlide(f"{self.path} is not an image Pillow can read") from exc
        except OSError as exc:
            raise SlideError(f"cannot decode {self.path}: {exc}", hint=CORRUPT_HINT) from exc

    def _info(self, rgb: np.ndarray) -> SlideInfo:
        dpi = getattr(self, "_dpi", None)
        file_mpp = 25_400.0 / float(dpi[0]) if dpi and float(dpi[0]) > 0 else None
        return SlideInfo(
            level_dimensions=((int(rgb.shape[1]), int(rgb.shape[0])),),
            level_downsamples=(1.0,),
            vendor="plain-image",
            file_mpp=file_mpp,  # dpi → µm/px; 72/96/300 dpi defaults are refused as implausible
            mpp_key="dpi" if file_mpp else "",
        )

    def _read(self, rgb: np.ndarray, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, rgb.shape[1]), min(y + h, rgb.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = rgb[y0:y1, x0:x1]
        return out

    def _close(self, rgb: np.ndarray) -> None:
        """Nothing to close: the pixels are an array."""
