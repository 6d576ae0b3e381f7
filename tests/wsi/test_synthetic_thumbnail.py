"""The synthetic Aperio SVS has a stripped thumbnail as page 1, like a scanner writes it, and
every reader still finds the same pyramid."""

import numpy as np
import openslide
import pytest
import tifffile

from cscl.synthetic.tiff_writer import write_pyramid
from cscl.wsi.readers import open_slide


def _render(x, y, w, h):
    yy, xx = np.mgrid[y : y + h, x : x + w]
    return np.stack([(xx * 7 + yy) % 256, (yy * 3) % 256, (xx ^ yy) % 256], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def svs(tmp_path_factory):
    path = tmp_path_factory.mktemp("thumb") / "slide.svs"
    return path, write_pyramid(path, 3000, 2200, _render, mpp=0.5)


def test_page_order_is_the_scanners(svs):
    path, sizes = svs
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert [p.is_tiled for p in pages] == [True, False, True, True]
        assert max(pages[1].shape[:2]) <= 768
        assert tif.is_svs
        by_name = {s.name: s for s in tif.series}
        # tifffile's SVS parser trusts page order: right only with the thumbnail in place
        assert [lvl.shape[:2] for lvl in by_name["Baseline"].levels] == [(h, w) for w, h in sizes]
        assert "Thumbnail" in by_name


def test_openslide_and_tifffile_read_the_same_pyramid(svs):
    path, sizes = svs
    osl = openslide.OpenSlide(str(path))
    assert osl.level_dimensions == tuple(sizes)
    assert "thumbnail" in osl.associated_images
    assert osl.properties["openslide.vendor"] == "aperio"
    with open_slide(path, backend="openslide") as a, open_slide(path, backend="tifffile") as b:
        assert a.info.level_dimensions == b.info.level_dimensions == tuple(sizes)
        for level, (x, y) in ((0, (1000, 700)), (1, (1000, 700)), (2, (256, 256))):
            np.testing.assert_array_equal(
                a.read_region((x, y), level, (200, 150)), b.read_region((x, y), level, (200, 150))
            )
