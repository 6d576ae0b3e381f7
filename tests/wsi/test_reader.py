import numpy as np
import pytest

from cscl.errors import SlideError
from cscl.wsi.readers import open_slide


def test_open_aperio_reads_mpp_and_levels(he_slide):
    with open_slide(he_slide) as wsi:
        assert wsi.vendor == "aperio"
        assert wsi.mpp == pytest.approx(0.5) and wsi.mpp_source == "openslide.mpp-x"
        assert wsi.dimensions == (1536, 1536)
        assert wsi.level_downsamples == (1.0, 4.0)
        patch = wsi.read_region((0, 0), 0, (32, 16))
        assert patch.shape == (16, 32, 3) and patch.dtype == np.uint8


def test_read_downsampled_matches_pyramid_level(he_slide):
    with open_slide(he_slide) as wsi:
        small = wsi.read_downsampled(4.0, tile=100)  # tiles of 100 px must stitch seamlessly
        whole = wsi.read_region((0, 0), 1, (384, 384))
        assert small.shape == (384, 384, 3)
        np.testing.assert_array_equal(small, whole)
        eight = wsi.read_downsampled(8.0)
        assert eight.shape == (192, 192, 3)


def test_mpp_override_beats_file(he_slide):
    with open_slide(he_slide, mpp=0.25) as wsi:
        assert wsi.mpp == 0.25 and wsi.mpp_source == "override"


def test_mpp_from_objective_power_warns(slide_factory):
    p = slide_factory("mag.svs", mpp=None, mag=40)
    with pytest.warns(UserWarning, match="objective power 40x"), open_slide(p) as wsi:
        assert wsi.mpp == pytest.approx(0.25) and wsi.mpp_source == "objective-power"


def test_generic_tiff_resolution_tags(slide_factory):
    p = slide_factory("gen.tiff", fmt="generic", mpp=0.5)
    with open_slide(p) as wsi:
        assert wsi.vendor == "generic-tiff"
        assert wsi.mpp == pytest.approx(0.5, rel=1e-3)


def test_no_mpp_says_how_to_pass_it(slide_factory):
    p = slide_factory("nompp.tiff", fmt="generic", mpp=None)
    with pytest.raises(SlideError, match="nompp.tiff") as err:
        open_slide(p)
    assert "--mpp" in str(err.value) and "manifest `mpp` column" in str(err.value)
    with open_slide(p, mpp=0.5) as wsi:  # an override makes it usable
        assert wsi.mpp == 0.5


def test_not_a_slide(tmp_path):
    p = tmp_path / "random.svs"
    p.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(SlideError, match="random.svs.*not a slide"):
        open_slide(p)


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(SlideError, match="not found.*nope.svs"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(SlideError, match="is a directory, not a slide file.*point to the slide"):
        open_slide(tmp_path)


def test_truncated_slide_names_the_file(tmp_path, he_slide):
    data = he_slide.read_bytes()
    p = tmp_path / "cut.svs"
    p.write_bytes(data[: len(data) // 2])
    # it may open (header first) and then fail reading tiles: either way the error names it
    with pytest.raises(SlideError, match="cut.svs"), open_slide(p) as wsi:
        wsi.read_downsampled(1.0)


def test_open_from_s3(s3_endpoint, he_slide, tmp_path, monkeypatch):
    from cscl.io import storage

    monkeypatch.setenv("CSCL_CACHE_DIR", str(tmp_path / "cache"))
    storage.configure_store(s3_endpoint)
    storage.s3_client().create_bucket(Bucket="slides")
    storage.upload(he_slide, "s3://slides/c/case000_HE.svs")
    with open_slide("s3://slides/c/case000_HE.svs") as wsi:
        assert wsi.dimensions == (1536, 1536) and wsi.uri.startswith("s3://")
        assert str(wsi.path).startswith(str(tmp_path / "cache"))
    with pytest.raises(SlideError, match="s3://slides/c/missing.svs"):
        open_slide("s3://slides/c/missing.svs")
