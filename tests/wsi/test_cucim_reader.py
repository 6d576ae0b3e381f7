"""The optional cuCIM reader: same geometry, mpp and pixels as OpenSlide (CPU reads, no GPU
needed), batch reads equal one-by-one reads, and it works in forked DataLoader workers.

Skipped with the reason when cuCIM is not installed (it is not in the project's dependencies);
the one test that always runs checks what `--reader cucim` says then."""

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_readers import CMU, REGIONS, TCGA, _maxdiff

from cscl.errors import InputError, SlideError
from cscl.features import read_features
from cscl.wsi.extract import extract_slide
from cscl.wsi.readers import list_readers, open_slide

try:
    import cucim  # noqa: F401

    WHY = None
except ImportError as exc:
    WHY = f"cucim not installed ({exc}); pip install cucim-cu12 to run the cuCIM reader tests"
needs_cucim = pytest.mark.skipif(WHY is not None, reason=WHY or "")

# Largest pixel difference to OpenSlide: JPEG tiles decode identically (libjpeg-turbo in both);
# JPEG 2000 tiles (the TCGA slide) differ by 1 in a few pixels (another JPEG 2000 decoder).
MAX_DIFF = {"jpeg": 0, "jpeg2000": 1}


def assert_same_as_openslide(path, mpp=None, regions=(), codec="jpeg"):
    """Geometry, metadata and pixels as OpenSlide's: level 0 anywhere (edges and outside too),
    coarser levels at aligned locations. Unaligned locations at coarser levels fall between
    pixels: OpenSlide interpolates, cuCIM floors; the reader rounds them as the tifffile reader
    does, and equals it there."""
    tol = MAX_DIFF[codec]
    with (
        open_slide(path, "openslide", mpp) as ref,
        open_slide(path, "cucim", mpp) as cu,
        open_slide(path, "tifffile", mpp) as tf,
    ):
        assert cu.backend == "cucim"
        assert cu.level_dimensions == ref.level_dimensions
        assert cu.level_downsamples == pytest.approx(ref.level_downsamples)
        assert (cu.mpp, cu.vendor, cu.magnification, cu.mpp_source) == pytest.approx(
            (ref.mpp, ref.vendor, ref.magnification, tf.mpp_source), nan_ok=True
        )
        w, h = ref.dimensions
        for (x, y), size in [((0, 0), (w, h)), *regions]:
            assert _maxdiff(cu.read_region((x, y), 0, size), ref.read_region((x, y), 0, size)) <= tol  # fmt: skip
        for lvl in range(1, ref.level_count):
            lw, lh = ref.level_dimensions[lvl]
            ds = ref.level_downsamples[lvl]
            for (x, y), (rw, rh) in [((0, 0), (lw, lh)), ((int(64 * ds), int(32 * ds)), (100, 80))]:  # fmt: skip
                a = cu.read_region((x, y), lvl, (rw, rh))
                assert _maxdiff(a, ref.read_region((x, y), lvl, (rw, rh))) <= tol, (lvl, x, y)
            for (x, y), size in [((333, 517), (100, 80)), ((lw * ds - 50, -7), (120, 64))]:
                x, y = int(x), int(y)
                a, b = cu.read_region((x, y), lvl, size), tf.read_region((x, y), lvl, size)
                assert _maxdiff(a, b) <= tol, (lvl, x, y)


@needs_cucim
def test_cucim_equals_openslide_on_synthetic_slides(cohort):
    path = Path(cohort).parent / pd.read_csv(cohort).slide_uri.iloc[0]
    assert_same_as_openslide(path, regions=REGIONS)


@needs_cucim
@pytest.mark.parametrize("fmt", ["aperio", "generic"])
def test_cucim_equals_openslide_on_test_writer_slides(slide_factory, fmt):
    assert_same_as_openslide(slide_factory(f"c_{fmt}.tif", fmt=fmt, size=1500), regions=REGIONS)


@needs_cucim
def test_cucim_on_real_aperio_slides():
    if not CMU.exists():
        pytest.skip(f"real slides absent: {CMU} (see ../shared/data/real/README.md)")
    assert_same_as_openslide(CMU, regions=[((100, 2900), (300, 300)), ((2000, 7), (500, 500))])
    with open_slide(CMU, "cucim") as wsi:
        assert wsi.mpp == pytest.approx(0.499) and wsi.magnification == 20
    assert_same_as_openslide(TCGA, mpp=0.5, regions=[((1000, 1000), (777, 555))], codec="jpeg2000")


@needs_cucim
def test_cucim_batch_read_equals_single_reads(he_slide):
    coords = np.array([[100, 200], [333, 517], [0, 0], [1200, 900], [-20, -10]])
    with open_slide(he_slide, "cucim") as wsi:
        one = np.stack([wsi.read_region((x, y), 0, (96, 64)) for x, y in coords])
        wsi.threads = 3
        np.testing.assert_array_equal(wsi.read_regions(coords, 0, (96, 64)), one)
        back = pickle.loads(pickle.dumps(wsi))
    assert back._handle is None and back.threads == 3
    np.testing.assert_array_equal(back.read_regions(coords, 0, (96, 64)), one)
    back.close()


@needs_cucim
def test_extract_with_cucim_in_forked_workers(he_slide, cfg, encoder, tmp_path):
    a = extract_slide(str(he_slide), tmp_path / "os", replace(cfg, reader="openslide"), encoder)
    b = extract_slide(
        str(he_slide), tmp_path / "cu", replace(cfg, reader="cucim", num_workers=2), encoder
    )
    assert a.status == b.status == "done", (a.error, b.error)
    fa, fb = read_features(a.path), read_features(b.path)
    np.testing.assert_array_equal(fa.coords, fb.coords)
    np.testing.assert_allclose(fa.features, fb.features, atol=1e-5)


def test_cucim_reader_is_opt_in(he_slide):
    """`auto` never picks cuCIM; without cuCIM installed, asking for it says how to install it."""
    assert "cucim" not in list_readers(auto=True)
    if WHY is None:
        assert "cucim" in list_readers()
        return
    with pytest.raises(InputError, match="unknown slide reader 'cucim'.*pip install cucim-cu12"):
        open_slide(he_slide, "cucim")


def test_opt_in_readers_are_used_only_by_name(he_slide, monkeypatch):
    """A backend registered with auto=False is skipped by `auto` even when tried first."""
    from cscl.wsi.readers import registry
    from cscl.wsi.readers.openslide_reader import OpenSlideReader

    monkeypatch.setattr(registry, "_READERS", dict(registry._READERS))
    monkeypatch.setattr(registry, "_OPT_IN", set(registry._OPT_IN))

    @registry.register_reader("first-but-opt-in", priority=0, auto=False)
    class OptIn(OpenSlideReader):
        pass

    assert list_readers()[0] == "first-but-opt-in" != list_readers(auto=True)[0]
    with open_slide(he_slide) as wsi:
        assert wsi.backend == "openslide"
    with open_slide(he_slide, "first-but-opt-in") as wsi:
        assert wsi.backend == "first-but-opt-in"


@needs_cucim
def test_cucim_refuses_what_it_cannot_read(tmp_path):
    junk = tmp_path / "random.svs"
    junk.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(SlideError, match="random.svs"):
        open_slide(junk, "cucim")
