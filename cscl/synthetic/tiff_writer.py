"""Streamed pyramidal TIFF writer (Aperio SVS or generic tiled TIFF) with JPEG tiles.

Level 0 is rendered block by block (one tile row high, `BLOCK_W` px wide) and handed to tifffile
as a tile iterator; each block is also box-downsampled into the next levels, whose rows are
written in place (`os.pwrite`) into raw temporary files next to the output. After level 0, each
lower level is streamed from its raw file in blocks of the same width. Peak memory is a few
blocks, whatever the slide's width and height (full-width strips grew with the width: 454 MB at
80k px wide, issue 14). The pixels are those of the strip-by-strip writer: the same `render`
calls, and 2×2 box means never straddle a block edge (blocks start at even columns on every
level).

Aperio detection by OpenSlide needs every page written with `metadata=None` (otherwise tifffile
puts its own JSON in ImageDescription) and the first description starting with
"Aperio Image Library"; `MPP = …` there becomes `openslide.mpp-x`.

Aperio files are laid out like a scanner writes them: level 0, then a small STRIPPED thumbnail
page, then the reduced levels. Readers that trust page order (tifffile's SVS series, tiffslide:
"page 1 is the thumbnail") misread a file without it, taking level 1 for the thumbnail.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

RenderFn = Callable[[int, int, int, int], np.ndarray]  # (x0, y0, w, h) -> uint8 (h, w, 3)
TILE = 256
BLOCK_W = 1024
THUMB_MAX_SIDE = 768  # Aperio thumbnails are a few hundred pixels per side
PYRAMID_TMP_PREFIX = ".pyr-"  # a killed run's leftovers: synthetic.workers.remove_debris


def level_sizes(width: int, height: int, min_levels: int = 3, max_side: int = 1024):
    """Level sizes halving until the larger side is <= max_side, at least `min_levels`, at most 8
    (level 0 strips are one tile = 2^8 rows high)."""
    sizes = [(width, height)]
    while len(sizes) < 8 and (len(sizes) < min_levels or max(sizes[-1]) > max_side):
        w, h = sizes[-1]
        sizes.append(((w + 1) // 2, (h + 1) // 2))
    return sizes


def downsample2(a: np.ndarray) -> np.ndarray:
    """2×2 box mean of a uint8 (h, w, 3) array; odd edges replicate the last row/column."""
    h, w = a.shape[:2]
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    rows = a[0::2].astype(np.uint16)
    rows += a[1::2]
    pairs = rows.reshape(rows.shape[0], -1, 6)  # two neighbouring RGB pixels side by side
    s = pairs[:, :, :3] + pairs[:, :, 3:]
    s += 2
    s >>= 2
    return s.astype(np.uint8)


def _tiles_of_rows(rows: Iterator[np.ndarray], tile: int) -> Iterator[np.ndarray]:
    """Tiles (left to right) of one tile row given as consecutive column blocks of any width."""
    pending: np.ndarray | None = None
    for block in rows:
        if pending is None or not pending.shape[1]:
            pending = block
        else:
            pending = np.concatenate([pending, block], axis=1)
        while pending.shape[1] >= tile:
            yield pending[:, :tile]
            pending = pending[:, tile:]
    if pending is not None and pending.shape[1]:
        yield pending


def _write_rows(fd: int, band: np.ndarray, y: int, x: int, level_w: int) -> None:
    """Put `band` (h, w, 3) at row `y`, column `x` of a raw row-major (…, level_w, 3) file."""
    h, w = band.shape[:2]
    if x == 0 and w == level_w:
        os.pwrite(fd, band.tobytes(), y * level_w * 3)
        return
    for r in range(h):
        os.pwrite(fd, band[r].tobytes(), ((y + r) * level_w + x) * 3)


def _read_rows(fd: int, y: int, n: int, x: int, w: int, level_w: int) -> np.ndarray:
    """Rows [y, y + n), columns [x, x + w) of a raw row-major (…, level_w, 3) file."""
    if x == 0 and w == level_w:
        buf = os.pread(fd, n * w * 3, y * level_w * 3)
    else:
        buf = b"".join(os.pread(fd, w * 3, ((y + r) * level_w + x) * 3) for r in range(n))
    return np.frombuffer(buf, np.uint8).reshape(n, w, 3)


def aperio_description(
    width: int, height: int, level_w: int, level_h: int, mpp: float, quality: int, tile: int
) -> str:
    base = (
        f"Aperio Image Library v12.0.0 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})"
    )
    if (level_w, level_h) != (width, height):
        base += f" -> {level_w}x{level_h}"
    mag = 10.0 / mpp
    return f"{base} JPEG/RGB Q={quality}|AppMag = {mag:g}|MPP = {mpp:.6g}|ScanScope ID = cscl-synthetic"


def thumbnail_of(level: np.ndarray, max_side: int = THUMB_MAX_SIDE) -> np.ndarray:
    """The smallest level, halved until its larger side is <= max_side."""
    while max(level.shape[:2]) > max_side:
        level = downsample2(level)
    return level


def _write_aperio_thumbnail(tif, raw: Path, size: tuple[int, int], slide_wh, mpp, quality, tile):
    """Page 1 of an Aperio file: the smallest level (read back from its raw file), shrunk."""
    w, h = size
    thumb = thumbnail_of(np.fromfile(raw, np.uint8).reshape(h, w, 3))
    th, tw = thumb.shape[:2]
    tif.write(
        thumb,
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": int(quality)},
        rowsperstrip=16,  # stripped, not tiled: how readers tell it from a level
        description=aperio_description(*slide_wh, tw, th, float(mpp), quality, tile),
        metadata=None,
        subfiletype=0,
    )


def write_pyramid(
    path: Path,
    width: int,
    height: int,
    render: RenderFn,
    *,
    fmt: str = "aperio",
    mpp: float | None = 0.5,
    quality: int = 90,
    tile: int = TILE,
) -> list[tuple[int, int]]:
    """Write the pyramid to `path` (caller makes it atomic). Returns the level sizes."""
    import tifffile

    sizes = level_sizes(width, height)
    bigtiff = width * height * 3 * 4 // 3 > 2**31
    tmpdir = tempfile.mkdtemp(prefix=PYRAMID_TMP_PREFIX, dir=Path(path).parent)
    raws = [Path(tmpdir) / f"level{k}.raw" for k in range(len(sizes))]
    read_w = tile * max(1, BLOCK_W // tile)  # raw levels are read back in tile-aligned blocks
    try:
        with contextlib.ExitStack() as stack:
            fds = []
            for p in raws[1:]:
                fds.append(os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
                stack.callback(os.close, fds[-1])

            def level0_row(y: int, h: int) -> Iterator[np.ndarray]:
                for x in range(0, width, BLOCK_W):  # even x: 2×2 means stay inside a block
                    block = render(x, y, min(BLOCK_W, width - x), h)
                    band, by, bx = block, y, x
                    for k, fd in enumerate(fds, start=1):
                        band, by, bx = downsample2(band), by // 2, bx // 2
                        _write_rows(fd, band, by, bx, sizes[k][0])
                    yield block

            def level0_tiles() -> Iterator[np.ndarray]:
                for y in range(0, height, tile):
                    yield from _tiles_of_rows(level0_row(y, min(tile, height - y)), tile)

            def raw_tiles(k: int) -> Iterator[np.ndarray]:
                w, h = sizes[k]
                fd = fds[k - 1]
                for y in range(0, h, tile):
                    n = min(tile, h - y)
                    blocks = (
                        _read_rows(fd, y, n, x, min(read_w, w - x), w) for x in range(0, w, read_w)
                    )
                    yield from _tiles_of_rows(blocks, tile)

            with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
                for k, (w, h) in enumerate(sizes):
                    desc = None
                    if fmt == "aperio":
                        desc = aperio_description(width, height, w, h, float(mpp), quality, tile)
                    data = level0_tiles() if k == 0 else raw_tiles(k)
                    if k == 1 and fmt == "aperio":
                        _write_aperio_thumbnail(
                            tif, raws[-1], sizes[-1], (width, height), mpp, quality, tile
                        )
                    tif.write(
                        data,
                        shape=(h, w, 3),
                        dtype=np.uint8,
                        tile=(tile, tile),
                        photometric="rgb",
                        compression="jpeg",
                        compressionargs={"level": int(quality)},
                        description=desc,
                        metadata=None,
                        # generic TIFF readers (OpenSlide) find the pyramid by "reduced image"
                        # pages; Aperio marks none and is recognised by its description
                        subfiletype=1 if (k and fmt != "aperio") else 0,
                    )
    finally:
        for p in raws:
            if p.exists():
                p.unlink()
        os.rmdir(tmpdir)
    return sizes


def n_levels(width: int, height: int) -> int:
    return len(level_sizes(width, height))
