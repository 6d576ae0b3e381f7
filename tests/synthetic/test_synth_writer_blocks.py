"""The block-by-block pyramid writer writes the same file, byte for byte, as the strip-by-strip
writer it replaced (kept here as the reference: full-width strips, levels downsampled strip-wise)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tifffile

from cscl.synthetic.tiff_writer import (
    BLOCK_W,
    aperio_description,
    downsample2,
    level_sizes,
    thumbnail_of,
    write_pyramid,
)


def _render(x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Depends on the call's origin (like the real renderer's noise), not only on the pixel."""
    rng = np.random.default_rng([x0, y0])
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
    base = np.stack([(xx // 7) % 256, (yy // 5) % 256, (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def _reference_write(path, width, height, render, fmt, mpp=0.5, quality=90, tile=256):
    sizes = level_sizes(width, height)
    levels = [np.empty((h, w, 3), np.uint8) for w, h in sizes]  # small slides: all in memory
    for y in range(0, height, tile):
        h = min(tile, height - y)
        strip = np.empty((h, width, 3), np.uint8)
        for x in range(0, width, BLOCK_W):
            strip[:, x : x + min(BLOCK_W, width - x)] = render(x, y, min(BLOCK_W, width - x), h)
        levels[0][y : y + h] = band = strip
        for k in range(1, len(sizes)):
            band = downsample2(band)
            levels[k][y >> k : (y >> k) + band.shape[0]] = band

    def tiles(a):
        for y in range(0, a.shape[0], tile):
            for x in range(0, a.shape[1], tile):
                yield a[y : y + tile, x : x + tile]

    with tifffile.TiffWriter(path, bigtiff=width * height * 4 > 2**31) as tif:
        for k, (w, h) in enumerate(sizes):
            desc = aperio_description(width, height, w, h, mpp, quality, tile)
            if k == 1 and fmt == "aperio":
                thumb = thumbnail_of(levels[-1])
                tif.write(
                    thumb, photometric="rgb", compression="jpeg",
                    compressionargs={"level": quality}, rowsperstrip=16, metadata=None,
                    description=aperio_description(
                        width, height, thumb.shape[1], thumb.shape[0], mpp, quality, tile
                    ),
                    subfiletype=0,
                )  # fmt: skip
            tif.write(
                tiles(levels[k]), shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile),
                photometric="rgb", compression="jpeg", compressionargs={"level": quality},
                description=desc if fmt == "aperio" else None, metadata=None,
                subfiletype=1 if (k and fmt != "aperio") else 0,
            )  # fmt: skip


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "width,height,fmt",
    [(2600, 700, "aperio"), (1000, 1030, "generic"), (4099, 513, "aperio"), (300, 260, "aperio")],
)
def test_same_bytes_as_the_strip_writer(tmp_path, width, height, fmt):
    new, ref = tmp_path / "new.tif", tmp_path / "ref.tif"
    write_pyramid(new, width, height, _render, fmt=fmt, mpp=0.5)
    _reference_write(ref, width, height, _render, fmt)
    assert _sha(new) == _sha(ref)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pyr-")]  # temp files gone
