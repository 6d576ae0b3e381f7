"""The pillow backend: plain images as one-level slides (the one-file reader plug-in)."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from slides import render

from cscl.errors import SlideError
from cscl.features import read_features
from cscl.wsi.extract import extract_slide
from cscl.wsi.readers import list_readers, open_slide

RAT_KIDNEY = Path(__file__).resolve().parents[3] / "shared/data/real/pairs/rat-kidney"


@pytest.fixture
def png(tmp_path) -> tuple[Path, np.ndarray]:
    rgb = render(640, 480)
    path = tmp_path / "region.png"
    Image.fromarray(rgb).save(path, dpi=(50_800, 50_800))  # 0.5 µm/px stated as dpi
    return path, rgb


def test_auto_reads_a_plain_image_with_pillow(png):
    path, rgb = png
    assert list_readers()[-1] == "pillow"  # tried last: scanner formats go to OpenSlide
    with open_slide(path) as r:
        assert r.backend == "pillow" and r.level_count == 1
        assert r.mpp == pytest.approx(0.5) and r.mpp_source == "dpi"
        np.testing.assert_array_equal(r.read_region((100, 50), 0, (64, 32)), rgb[50:82, 100:164])
        edge = r.read_region((620, 470), 0, (40, 20))  # outside the image is white
        assert (edge[10:, :] == 255).all() and (edge[:, 20:] == 255).all()
        again = pickle.loads(pickle.dumps(r))  # reopens in a worker
        np.testing.assert_array_equal(again.read_region((0, 0), 0, (8, 8)), rgb[:8, :8])


def test_software_default_dpi_is_no_resolution(tmp_path):
    path = tmp_path / "screenshot.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path, dpi=(72, 72))
    with pytest.raises(SlideError, match="--mpp"):
        open_slide(path)
    assert open_slide(path, mpp=1.0).mpp == 1.0


def test_extraction_through_the_pillow_backend(png, cfg, encoder, tmp_path):
    path, _ = png
    res = extract_slide(str(path), tmp_path / "f", replace(cfg, reader="pillow"), encoder)
    assert res.status == "done", res.error
    assert read_features(res.path).features.shape[0] > 0


def test_real_serial_section_jpeg():
    jpg = RAT_KIDNEY / "Rat-Kidney_HE.jpg"
    if not jpg.exists():
        pytest.skip(f"real data not present: {jpg}")
    with open_slide(jpg, mpp=10.0) as r:  # 5 % scale export: the ANHIR pair states no mpp
        assert r.backend == "pillow" and r.dimensions == Image.open(jpg).size
        assert r.get_thumbnail(256).shape[2] == 3
