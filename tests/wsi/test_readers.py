"""Slide reader backends: the tifffile reader agrees with OpenSlide, `auto` falls back, readers
pickle without their handle, and the backend that read a slide is recorded."""

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from slides import render

from cscl.errors import InputError, SlideError
from cscl.features import read_features
from cscl.wsi.dataset import PatchDataset
from cscl.wsi.extract import extract_slide
from cscl.wsi.readers import UnsupportedSlide, list_readers, open_slide

REAL = Path(__file__).resolve().parents[2] / "../shared/data/real"
CMU = REAL / "slides/cmu-1-small-region.svs"
TCGA = REAL / "slides/tcga-cr-7395-01a-01-ts1.svs"


def _maxdiff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def assert_same_level0(path, mpp=None, regions=()):
    """Both backends: same geometry, and level-0 pixels equal (max abs diff ≤ 1)."""
    with open_slide(path, "openslide", mpp) as ref, open_slide(path, "tifffile", mpp) as tf:
        assert tf.backend == "tifffile" and ref.backend == "openslide"
        assert tf.level_dimensions == ref.level_dimensions
        assert tf.level_downsamples == pytest.approx(ref.level_downsamples)
        assert (tf.mpp, tf.vendor, tf.magnification) == pytest.approx(
            (ref.mpp, ref.vendor, ref.magnification), nan_ok=True
        )
        w, h = ref.dimensions
        for (x, y), size in [((0, 0), (w, h)), *regions]:
            assert _maxdiff(tf.read_region((x, y), 0, size), ref.read_region((x, y), 0, size)) <= 1
        for lvl in range(1, ref.level_count):  # aligned reads of coarser levels match too
            lw, lh = ref.level_dimensions[lvl]
            a = tf.read_region((0, 0), lvl, (lw, lh))
            b = ref.read_region((0, 0), lvl, (lw, lh))
            assert _maxdiff(a, b) <= 1


# edge-crossing, unaligned and partly-outside regions
REGIONS = [((333, 517), (700, 300)), ((1400, 1300), (300, 300)), ((-20, -10), (64, 64))]


def test_tifffile_equals_openslide_on_synthetic_slides(cohort):
    """The project's synthetic "Aperio" SVS has a stripped thumbnail at page 1, as scanners
    write it: it is never taken for a level (levels come from shapes)."""
    uri = pd.read_csv(cohort).slide_uri.iloc[0]
    path = Path(cohort).parent / uri
    tif = tifffile.TiffFile(path)
    assert [p.is_tiled for p in tif.pages][:2] == [True, False]  # thumbnail at page 1
    tif.close()
    assert_same_level0(path, regions=REGIONS)
    with open_slide(path, "tifffile") as wsi:
        assert wsi.level_count >= 2 and wsi.mpp_source == "aperio.MPP"


@pytest.mark.parametrize("fmt", ["aperio", "generic"])
def test_tifffile_equals_openslide_on_test_writer_slides(slide_factory, fmt):
    p = slide_factory(f"s_{fmt}.tif", fmt=fmt, size=1500)
    assert_same_level0(p, regions=REGIONS)


def test_tifffile_equals_openslide_on_real_aperio_slides():
    if not CMU.exists():
        pytest.skip(f"real slides absent: {CMU} (see ../shared/data/real/README.md)")
    # CMU-1 crop: JPEG/RGB tiles, 240 px, plus stripped thumbnail/label/macro pages (not levels)
    assert_same_level0(CMU, regions=[((100, 2900), (300, 300)), ((2000, 7), (500, 500))])
    with open_slide(CMU, "tifffile") as wsi:
        assert wsi.level_count == 1 and wsi.mpp == pytest.approx(0.499)
        assert wsi.magnification == 20 and wsi.vendor == "aperio"
    # TCGA frozen section: JPEG 2000 (RGB) tiles, 2 levels, no mpp in the file
    for backend in ("openslide", "tifffile"):
        with pytest.raises(SlideError, match="tcga-cr-7395.*no resolution.*--mpp"):
            open_slide(TCGA, backend)
    assert_same_level0(TCGA, mpp=0.5, regions=[((1000, 1000), (777, 555))])


def test_tifffile_refuses_what_it_cannot_read(tmp_path):
    junk = tmp_path / "random.svs"
    junk.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(UnsupportedSlide, match="random.svs is not a TIFF slide") as err:
        open_slide(junk, "tifffile")
    assert "--reader openslide" in str(err.value)
    deep = tmp_path / "u16.tif"
    tifffile.imwrite(deep, np.zeros((64, 64, 3), np.uint16), photometric="rgb")
    with pytest.raises(UnsupportedSlide, match="u16.tif has no 8-bit RGB image"):
        open_slide(deep, "tifffile", mpp=0.5)
    with pytest.raises(InputError, match="unknown slide reader 'nope'"):
        open_slide(junk, "nope")
    assert list_readers()[:2] == ["openslide", "tifffile"]


def test_auto_prefers_openslide_and_falls_back_to_tifffile(tmp_path, slide_factory):
    with open_slide(slide_factory("tiled.svs")) as wsi:
        assert wsi.backend == "openslide"
    # a stripped (untiled) TIFF: OpenSlide refuses it, tifffile reads it
    img = render(600, 400, "HE", seed=1)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, img, photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # fmt: skip
    with pytest.raises(SlideError, match="not a slide OpenSlide can read"):
        open_slide(flat, "openslide")
    with open_slide(flat) as wsi:
        assert wsi.backend == "tifffile" and wsi.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(wsi.read_region((10, 20), 0, (100, 50)), img[20:70, 10:110])


@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_reader_pickles_without_its_handle(he_slide, backend):
    with open_slide(he_slide, backend) as wsi:
        ref = wsi.read_region((100, 200), 0, (64, 64))
        blob = pickle.dumps(wsi)
        assert len(blob) < 10_000  # path, options and header facts only
        ds = pickle.loads(pickle.dumps(PatchDataset(wsi, np.array([[100, 200]]), 0, 64, 64)))
    back = pickle.loads(blob)
    assert back._handle is None and back.mpp == 0.5 and back.backend == backend
    np.testing.assert_array_equal(back.read_region((100, 200), 0, (64, 64)), ref)  # reopens
    np.testing.assert_array_equal(ds[[0]]["images"][0].permute(1, 2, 0).numpy(), ref)
    back.close()
    ds.reader.close()


def test_extract_with_tifffile_reader_records_it(he_slide, cfg, encoder, tmp_path):
    from dataclasses import replace

    a = extract_slide(str(he_slide), tmp_path / "os", replace(cfg, reader="openslide"), encoder)
    b = extract_slide(
        str(he_slide), tmp_path / "tf", replace(cfg, reader="tifffile", num_workers=2), encoder
    )
    assert a.status == b.status == "done", (a.error, b.error)
    fa, fb = read_features(a.path), read_features(b.path)
    assert fa.extractor_hash == fb.extractor_hash  # same pixels → same features, files reused
    np.testing.assert_array_equal(fa.coords, fb.coords)
    np.testing.assert_allclose(fa.features, fb.features, atol=2e-2)
    assert json.loads(fa.extra["qc"])["reader"] == "openslide"
    assert json.loads(fb.extra["qc"])["reader"] == "tifffile"


def test_cli_reader_flag(he_slide, tmp_path, capsys):
    from cscl.cli import main

    cli = ["--random-init", "--backbone", "test_resnet", "--patch-size", "64", "--quiet"]
    out = tmp_path / "f"
    argv = ["extract", "--slide", str(he_slide), "--out", str(out), "--workers", "0", *cli]
    assert main([*argv, "--reader", "tifffile"]) == 0
    assert json.loads(read_features(out / "case000_HE.h5").extra["qc"])["reader"] == "tifffile"
    assert main([*argv, "--reader", "bogus"]) == 2
    assert "unknown --reader 'bogus'" in capsys.readouterr().err
