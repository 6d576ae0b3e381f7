"""The one interface every slide reader backend implements (TRIDENT's one reader per backend).

Everything that reads slides (tissue segmentation, QC, patch datasets, heatmaps, registration,
serving) uses `SlideReader` only, so a backend (OpenSlide, tifffile, later cuCIM or DICOM) plugs
in without touching them. A backend implements four small methods (`_open`, `_info`, `_read`,
`_close`); the geometry helpers, the mpp rule and pickling live here once.

Every later step works in micrometres per pixel, so a slide whose mpp cannot be found is refused
with an error that says how to supply it.
"""

from __future__ import annotations

import math
import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from cscl.errors import SlideError

MPP_HINT = "pass --mpp (single slide) or fill the manifest `mpp` column (µm/px at level 0)"
CORRUPT_HINT = "the file may be truncated or corrupt: copy/download it again"


class UnsupportedSlide(SlideError):
    """This backend cannot open this kind of file (another may): `backend="auto"` moves on."""


@dataclass(frozen=True)
class SlideInfo:
    """What a backend found in the file: pyramid geometry and the metadata QC needs."""

    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) per level, level 0 first
    level_downsamples: tuple[float, ...]
    vendor: str  # OpenSlide's vocabulary: "aperio", "generic-tiff", …
    file_mpp: float | None = None  # µm/px at level 0 as the file states it
    mpp_key: str = ""  # where file_mpp came from ("openslide.mpp-x", "aperio.MPP", …)
    objective_power: float | None = None
    properties: dict[str, str] = field(default_factory=dict, repr=False)


def downsamples_of(dims: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> tuple[float, ...]:
    """Level downsamples as OpenSlide computes them: mean of the width and height ratios."""
    w0, h0 = dims[0]
    return tuple((w0 / w + h0 / h) / 2.0 for w, h in dims)


# A microscope slide's level 0 lies between ~0.05 µm/px (beyond optical resolution) and ~20 µm/px
# (a 0.5x overview scan); anything outside is not a calibration. So are the dpi values image
# software writes when it knows nothing (72 dpi = the TIFF default = 352.8 µm/px, 96, 300 dpi).
MPP_RANGE = (0.05, 20.0)
DEFAULT_DPI = (72.0, 96.0, 150.0, 300.0, 600.0, 1200.0)
_UM_PER_INCH = 25_400.0


def implausible_mpp(mpp: float | None) -> str | None:
    """Why `mpp` (level-0 µm/px) cannot be a microscope calibration, or None when it can."""
    if mpp is None or not math.isfinite(mpp) or mpp <= 0:
        return f"{mpp} is not a positive number"
    for dpi in DEFAULT_DPI:
        if math.isclose(mpp, _UM_PER_INCH / dpi, rel_tol=1e-3):
            return (
                f"{mpp:.4g} µm/px is {dpi:g} dpi, a software default, not a microscope calibration"
            )
    lo, hi = MPP_RANGE
    if not lo <= mpp <= hi:
        return f"{mpp:.4g} µm/px is outside the range of microscope scans ({lo:g}–{hi:g} µm/px)"
    return None


def resolve_mpp(info: SlideInfo, path: Path | str, mpp: float | None = None) -> tuple[float, str]:
    """Level-0 µm/px: explicit override > the file's mpp > 10 / objective power (warns).

    A file value outside `MPP_RANGE` (or a default dpi) counts as no value: trusting 72 dpi
    turns a slide into 75,000 sub-pixel patches. An override outside the range is refused.
    """
    if mpp is not None and not (isinstance(mpp, float) and math.isnan(mpp)):
        why = implausible_mpp(float(mpp)) if isinstance(mpp, int | float) else f"{mpp!r}"
        if why:
            raise SlideError(f"mpp override for {path} is not usable: {why}", hint=MPP_HINT)
        return float(mpp), "override"
    ignored = ""
    if info.file_mpp is not None:
        why = implausible_mpp(float(info.file_mpp))
        if why is None:
            return float(info.file_mpp), info.mpp_key
        ignored = f"; its {info.mpp_key} was ignored: {why}"
    mag = info.objective_power
    if mag is not None and mag > 0 and math.isfinite(mag) and implausible_mpp(10.0 / mag) is None:
        warnings.warn(
            f"{path}: no usable mpp in the file{ignored}; assuming {10.0 / mag:.4g} µm/px from "
            f"objective power {mag:g}x ({MPP_HINT} to be exact)",
            stacklevel=3,
        )
        return 10.0 / mag, "objective-power"
    raise SlideError(
        f"{path} states no resolution (no usable mpp, no objective power){ignored}", hint=MPP_HINT
    )


class SlideReader(ABC):
    """An open slide with its level-0 resolution resolved.

    Picklable: a pickle holds the path, the options and what was read from the header, never
    the file handle; a DataLoader worker (or a forked process) reopens the file on first read.
    """

    name: ClassVar[str] = ""  # the backend name, set by `register_reader`

    def __init__(
        self, path: str | os.PathLike, *, uri: str | None = None, mpp: float | None = None
    ):
        self.path = Path(path)
        self.uri = uri or str(path)
        self.mpp_override = mpp
        self._handle: Any = None
        self._pid = 0
        self.info = self._info(self.handle)
        try:
            self.mpp, self.mpp_source = resolve_mpp(self.info, self.path, mpp)
        except Exception:
            self.close()
            raise

    # ---- what a backend implements ----------------------------------------------------------
    @abstractmethod
    def _open(self) -> Any:
        """Open `self.path`; SlideError naming the file when this backend cannot read it."""

    @abstractmethod
    def _info(self, handle: Any) -> SlideInfo:
        """Geometry and metadata of the open file."""

    @abstractmethod
    def _read(self, handle: Any, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) at `level`, top-left (x, y) in level-0 px; outside = white."""

    def _close(self, handle: Any) -> None:
        close = getattr(handle, "close", None)
        if close is not None:
            close()

    # ---- the handle: opened lazily, once per process ----------------------------------------
    @property
    def handle(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            # a forked worker must not share the parent's file position or library state
            self._handle = self._open()
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._close(self._handle)
        self._handle = None

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, mpp={self.mpp:g})"

    # ---- geometry ---------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.name

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self.info.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self.info.level_downsamples

    @property
    def level_count(self) -> int:
        return len(self.info.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.info.level_dimensions[0]

    @property
    def width(self) -> int:
        return int(self.dimensions[0])

    @property
    def height(self) -> int:
        return int(self.dimensions[1])

    @property
    def vendor(self) -> str:
        return self.info.vendor

    @property
    def properties(self) -> dict[str, str]:
        return self.info.properties

    @property
    def magnification(self) -> float:
        """Objective power of level 0 (NaN when the file does not say)."""
        mag = self.info.objective_power
        return float(mag) if mag is not None and mag > 0 else math.nan

    def best_level_for_downsample(self, downsample: float) -> int:
        """Coarsest level not coarser than `downsample` (1 % slack for 4.0003-style factors)."""
        ok = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * 1.01]
        return max(ok) if ok else 0

    # ---- pixels -----------------------------------------------------------------------------
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """RGB uint8 (h, w, 3) of `size` (w, h) px at `level`, `location` = level-0 top-left."""
        (x, y), (w, h) = location, size
        if not 0 <= int(level) < self.level_count:
            raise SlideError(f"{self.path} has no level {level} ({self.level_count} levels)")
        return self._read(self.handle, int(x), int(y), int(level), int(w), int(h))

    def read_regions(self, locations: np.ndarray, level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (N, h, w, 3): one `size` region per level-0 (x, y) row of `locations`.

        A DataLoader batch reads its patches with one call; a backend with a batch decoder
        (cuCIM's threaded `read_region(locations, …)`) overrides this, the rest read one by one.
        """
        w, h = int(size[0]), int(size[1])
        out = np.empty((len(locations), h, w, 3), np.uint8)
        for k, (x, y) in enumerate(np.asarray(locations).reshape(-1, 2)):
            out[k] = self.read_region((int(x), int(y)), level, (w, h))
        return out

    def check_readable(self) -> None:
        """Read a corner of the smallest level: a truncated file fails here, not mid-run."""
        lvl = self.level_count - 1
        lw, lh = self.level_dimensions[lvl]
        self.read_region((0, 0), lvl, (min(lw, 64), min(lh, 64)))

    def read_downsampled(self, downsample: float, tile: int = 1024) -> np.ndarray:
        """The whole slide at `downsample` (level-0 px per output px), assembled tile by tile.

        Reads from the best pyramid level in bounded tiles, so memory stays at the size of the
        output even for a slide without a pyramid.
        """
        out_w = max(1, int(math.ceil(self.width / downsample)))
        out_h = max(1, int(math.ceil(self.height / downsample)))
        level = self.best_level_for_downsample(downsample)
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
                img = self.read_region((int(lx * lds), int(ly * lds)), level, (rw, rh))
                # the last tile may cover less than `tile` output px when the level ends early
                ow = min(tw, max(1, int(round(rw / f))))
                oh = min(th, max(1, int(round(rh / f))))
                if (rw, rh) != (ow, oh):
                    img = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BILINEAR))
                out[oy : oy + oh, ox : ox + ow] = img
        return out

    def get_thumbnail(self, max_size: int) -> np.ndarray:
        """The whole slide, longest side ≤ `max_size` px (RGB uint8)."""
        return self.read_downsampled(max(1.0, max(self.width, self.height) / float(max_size)))
