"""A slide up to its forward pass: open → segment tissue → patch grid → bounds → tile check.

Why a module of its own: extraction prepares the next slide in a helper process while the
current slide's patches go through the model (`cscl.wsi.prefetch`), and that process should
import only what preparing needs — not the encoders (timm) nor the extraction module. Both the
sequential path and the helper call the same functions here, so their outcomes are the same:
a `PreparedSlide`, or the `SlideResult` of a failure with the same message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cscl.errors import CsclError, ErrorKind, SlideError
from cscl.features import read_reuse_key
from cscl.io import storage
from cscl.wsi.patching import PatchGrid, patch_grid
from cscl.wsi.readers import SlideReader, open_slide
from cscl.wsi.readers.tile_check import TileCheck, check_tiles
from cscl.wsi.tissue import TissueMask, TissueParams, segment_tissue


@dataclass
class SlideResult:
    slide_id: str
    slide_uri: str
    status: str  # done | skipped | failed
    path: str | None = None
    n_patches: int = 0
    seconds: float = 0.0
    error: str | None = None
    corrupt_tiles: int = 0  # JPEG tiles under the patches that decode with libjpeg warnings
    warning: str | None = None  # extracted, but flagged (corrupt tiles)


def failure_message(exc: BaseException, slide_uri: str) -> str:
    """What a failed slide reports: a cscl error as it reads, anything else with its type."""
    if isinstance(exc, CsclError):
        return str(exc)
    return f"{type(exc).__name__}: {exc} (while extracting {slide_uri})"


@dataclass(frozen=True)
class PrepareOptions:
    """What preparing a slide needs from an `ExtractConfig` (small, picklable, encoder-free)."""

    reader: str = "auto"
    tissue: TissueParams = TissueParams()
    target_mpp: float = 1.0
    patch_size: int = 224
    min_tissue: float = 0.25
    max_patches: int | None = None
    tile_check: bool = True
    max_corrupt_tiles: int | None = None

    @classmethod
    def of(cls, cfg) -> PrepareOptions:
        """The options of an `ExtractConfig` (or anything with the same fields)."""
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__})


@dataclass
class PreparedSlide:
    """An open slide with everything the forward pass needs. Pickles without the file handle:
    the process that computes the features reopens the slide on its first read."""

    wsi: SlideReader
    mask: TissueMask
    grid: PatchGrid
    tiles: TileCheck
    seconds: float = 0.0  # spent preparing


def slide_source(slide_uri: str) -> str | None:
    """`<bytes>:<ETag or mtime tag>` of a slide: what tells a replaced slide from the one whose
    features are on disk (None when it cannot be stat'ed; opening it will say why)."""
    try:
        info = storage.stat(slide_uri)
    except CsclError:
        return None
    return f"{info.size}:{info.etag}"


def reusable(slide_uri: str, out, ehash: str) -> tuple[bool, str | None]:
    """(whether `out` already holds this slide's features for extractor `ehash`, the slide's
    source tag). Same extractor and (when recorded) the same slide bytes: a slide replaced under
    the same name is extracted again, never served from its predecessor's features."""
    source = slide_source(slide_uri)
    if not out.exists():
        return False, source
    old_hash, old_source = read_reuse_key(out)
    same = old_source is None or source is None or old_source == source
    return old_hash == ehash and same, source


def check_patch_count(wsi: SlideReader, grid: PatchGrid, cfg, mask) -> None:
    """Refuse a slide whose patch grid exceeds `cfg.max_patches`, naming the count and the mpp."""
    if cfg.max_patches is None or len(grid) <= cfg.max_patches:
        return
    raise SlideError(
        f"{wsi.path} would give {len(grid):,} patches of {cfg.patch_size} px at "
        f"{cfg.target_mpp:g} µm/px (level-0 mpp {wsi.mpp:.4g} from {wsi.mpp_source}, "
        f"{mask.area_mm2():.1f} mm² tissue), above the bound of {cfg.max_patches:,} per slide",
        hint="if the mpp is wrong, pass --mpp (or the manifest mpp column); if the slide is "
        "really that large, raise --max-patches (0 = no bound) or use a coarser --target-mpp",
        kind=ErrorKind.TOO_LARGE,
    )


def tile_check_of(wsi: SlideReader, grid: PatchGrid, cfg) -> TileCheck:
    """The integrity of the tiles the grid reads; fails the slide above `cfg.max_corrupt_tiles`."""
    if not cfg.tile_check:
        return TileCheck("off")
    tc = check_tiles(
        wsi.path,
        wsi.level_dimensions[grid.level],
        level=grid.level,
        scale=float(wsi.level_downsamples[grid.level]),
        coords=grid.coords,
        size=grid.read_size,
    )
    if cfg.max_corrupt_tiles is not None and tc.n_corrupt > cfg.max_corrupt_tiles:
        raise SlideError(
            f"{wsi.path}: {tc.summary()}; more than --max-corrupt-tiles {cfg.max_corrupt_tiles}",
            hint="copy the slide again from the scanner/archive (compare its checksum); raise "
            "--max-corrupt-tiles to extract it anyway",
        )
    return tc


def plan_patches(
    wsi: SlideReader, cfg, mask: TissueMask | None = None
) -> tuple[TissueMask, PatchGrid, TileCheck]:
    """(tissue mask, patch grid, tile check) of an open slide; SlideError when it has no
    usable patch, too many, or (with a bound) too many corrupt tiles. `cfg`: an ExtractConfig
    or PrepareOptions."""
    mask = mask if mask is not None else segment_tissue(wsi, cfg.tissue)
    grid = patch_grid(wsi, mask, cfg.target_mpp, cfg.patch_size, cfg.min_tissue)
    if len(grid) == 0:
        raise SlideError(
            f"no patch of {wsi.path} has >= {cfg.min_tissue:.0%} tissue "
            f"({mask.area_mm2():.3f} mm² of tissue found)",
            hint="lower --min-tissue or check the tissue mask with --qc-png",
        )
    check_patch_count(wsi, grid, cfg, mask)
    return mask, grid, tile_check_of(wsi, grid, cfg)


def prepare_slide(slide_uri: str, opts: PrepareOptions, mpp: float | None = None) -> PreparedSlide:
    """Open `slide_uri` with `opts.reader` and plan its patches; the slide stays open (the
    caller closes it, e.g. `with prepared.wsi:`). Raises what opening or planning raises."""
    t0 = time.perf_counter()
    wsi = open_slide(slide_uri, backend=opts.reader, mpp=mpp)
    try:
        mask, grid, tiles = plan_patches(wsi, opts)
    except BaseException:
        wsi.close()
        raise
    return PreparedSlide(wsi, mask, grid, tiles, seconds=time.perf_counter() - t0)
