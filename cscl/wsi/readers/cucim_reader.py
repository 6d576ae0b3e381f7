"""cuCIM backend (optional: `pip install cucim-cu12`/`-cu13`): TIFF/SVS pyramids via `CuImage`.

Why: cuCIM decodes a whole batch of patch locations in one threaded call (`read_regions`) and
can decode into GPU memory (nvJPEG), the step towards feeding a GPU from GPU decode. Used only
when asked for (`--reader cucim`; registered with `auto=False`): OpenSlide and tifffile already
open every file cuCIM opens, the reader is not part of the extractor hash so a backend `auto`
may pick must give OpenSlide's pixels on every file, and on CPU it is no faster than the
tifffile reader (docs/PERFORMANCE.md); benchmarks/gpu_node.py measures it on a GPU node.

Reads here are `device="cpu"` (host arrays, like every `SlideReader`) and work without a GPU.
Level-0 pixels equal OpenSlide's for JPEG tiles. Two cuCIM habits are corrected: outside a
generic TIFF it returns black (the reader reads only the part inside and leaves the rest white),
and on coarser levels it floors x / downsample (the reader rounds, as the tifffile reader does).
Metadata (mpp, vendor, magnification) comes from the TIFF header as the tifffile backend reads
it, so the backends agree on a slide's resolution.
"""

from __future__ import annotations

import math
from typing import Any

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
from cscl.wsi.readers.tifffile_reader import pyramid_pages, tiff_info

try:
    from cucim import CuImage
except ImportError as exc:  # the registry records this reason for `--reader cucim`
    raise ImportError(
        f"cuCIM is not installed ({exc}): pip install cucim-cu12 (or -cu13, as torch's CUDA)"
    ) from exc

_USE_OTHERS = "read it with --reader openslide or tifffile (or auto)"


@register_reader("cucim", priority=50, auto=False)
class CuCIMReader(SlideReader):
    """`cucim.CuImage` behind the `SlideReader` interface; `threads` decode a batch together."""

    threads: int = 1  # cuCIM worker threads per `read_regions` call (per DataLoader worker)

    def _open(self) -> Any:
        try:
            img = CuImage(str(self.path))
        except Exception as exc:  # cuCIM raises RuntimeError/ValueError for what it can't read
            raise UnsupportedSlide(
                f"{self.path} is not a slide cuCIM can read ({exc})", hint=_USE_OTHERS
            ) from exc
        res = img.resolutions
        if int(res["level_count"]) < 1 or img.dtype.bits != 8 or img.shape[-1] not in (3, 4):
            raise UnsupportedSlide(
                f"{self.path} has no 8-bit RGB pyramid cuCIM can read", hint=_USE_OTHERS
            )
        return img

    def _info(self, img: Any) -> SlideInfo:
        res = img.resolutions
        dims = tuple((int(w), int(h)) for w, h in res["level_dimensions"])
        try:
            with tifffile.TiffFile(str(self.path)) as tif:
                head = tiff_info(tif, pyramid_pages(tif))
        except Exception as exc:  # cuCIM opened it, so it is a TIFF; a broken header is odd
            raise UnsupportedSlide(
                f"{self.path}: cannot read its TIFF header ({exc})", hint=_USE_OTHERS
            ) from exc
        return SlideInfo(
            level_dimensions=dims,
            level_downsamples=downsamples_of(dims),
            vendor=head.vendor,
            file_mpp=head.file_mpp,
            mpp_key=head.mpp_key,
            objective_power=head.objective_power,
            properties=head.properties,
        )

    def _level_box(self, x: int, y: int, level: int, w: int, h: int):
        """Level px of the region (as the tifffile reader rounds them) and its part inside the
        level: (lx, ly, x0, y0, x1, y1)."""
        ds = self.level_downsamples[level]
        lx, ly = (x, y) if level == 0 else (int(round(x / ds)), int(round(y / ds)))
        lw, lh = self.level_dimensions[level]
        return lx, ly, max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)

    def _location(self, level: int, x0: int, y0: int) -> tuple[int, int]:
        """The level-0 location cuCIM maps to level px (x0, y0): it floors location / its own
        (float32) downsample, so the smallest level-0 px at or beyond x0 × downsample."""
        if level == 0:
            return x0, y0
        ds = float(self.handle.resolutions["level_downsamples"][level])
        return math.ceil(x0 * ds), math.ceil(y0 * ds)

    def _read(self, img: Any, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        # cuCIM fills outside the image with black for generic TIFFs (white for Aperio): read
        # only the part inside and leave the rest white, as the other backends do
        lx, ly, x0, y0, x1, y1 = self._level_box(x, y, level, w, h)
        out = np.full((h, w, 3), 255, np.uint8)
        if x1 <= x0 or y1 <= y0:
            return out
        try:
            loc = self._location(level, x0, y0)
            region = np.asarray(img.read_region(loc, (x1 - x0, y1 - y0), level))
        except Exception as exc:
            raise SlideError(
                f"cannot read {self.path} at level {level} ({x},{y} {w}x{h}): {exc}",
                hint=CORRUPT_HINT,
            ) from exc
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = _rgb(region)
        return out

    def read_regions(self, locations: np.ndarray, level: int, size: tuple[int, int]) -> np.ndarray:
        """With `threads` > 1, the patches inside the level in one threaded cuCIM call; patches
        crossing the level's edge one by one."""
        locs = np.asarray(locations, np.int64).reshape(-1, 2)
        if len(locs) <= 1 or self.threads <= 1:
            return super().read_regions(locs, level, size)
        w, h = int(size[0]), int(size[1])
        out = np.empty((len(locs), h, w, 3), np.uint8)
        inside, starts = [], []
        for k, (x, y) in enumerate(locs):
            lx, ly, x0, y0, x1, y1 = self._level_box(int(x), int(y), level, w, h)
            if (x0, y0, x1 - x0, y1 - y0) == (lx, ly, w, h):
                inside.append(k)
                starts.append(self._location(level, lx, ly))
            else:
                out[k] = self._read(self.handle, int(x), int(y), level, w, h)
        if inside:
            try:
                batches = self.handle.read_region(
                    [list(s) for s in starts], (w, h), level, num_workers=self.threads,
                    batch_size=len(inside),
                )  # fmt: skip
                # copy now: the iterator hands out the same buffer again for the next batch
                got = np.concatenate([_rgb(np.array(b)).reshape(-1, h, w, 3) for b in batches])
            except Exception as exc:
                raise SlideError(
                    f"cannot read {self.path} at level {level} ({len(inside)} patches of "
                    f"{w}x{h}): {exc}",
                    hint=CORRUPT_HINT,
                ) from exc
            out[inside] = got
        return out


def _rgb(arr: np.ndarray) -> np.ndarray:
    """RGB uint8; an alpha channel (RGBA slides) → transparent pixels white, as OpenSlide."""
    if arr.shape[-1] == 4:
        rgb = arr[..., :3].copy()
        rgb[arr[..., 3] == 0] = 255
        return rgb
    return np.ascontiguousarray(arr[..., :3])
