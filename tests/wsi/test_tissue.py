import numpy as np
import pytest
import tifffile
from PIL import Image
from slides import BACKGROUND, render

from cscl.errors import SlideError
from cscl.wsi.qc import slide_qc
from cscl.wsi.readers import open_slide
from cscl.wsi.tissue import TissueParams, save_qc_png, segment_rgb, segment_tissue


def _truth(size: int) -> np.ndarray:
    """The ellipses `render` draws (hole included: the segmentation should fill it)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    t = ((xx - 0.35 * size) / (0.22 * size)) ** 2 + ((yy - 0.45 * size) / (0.3 * size)) ** 2 < 1
    t |= ((xx - 0.72 * size) / (0.15 * size)) ** 2 + ((yy - 0.6 * size) / (0.2 * size)) ** 2 < 1
    return t


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("stain", ["HE", "KI67", "HER2"])
def test_segments_he_and_ihc(stain):
    img = render(512, 512, stain, seed=1)
    mask, thr, pen = segment_rgb(img, 8.0, TissueParams())
    assert _iou(mask, _truth(512)) > 0.93
    assert pen < 0.01


def test_small_hole_is_filled_and_dust_dropped():
    img = render(512, 512, "HE", seed=2)
    img[5:7, 5:7] = (120, 40, 120)  # a 2×2 px speck of dust on the glass
    mask, _, _ = segment_rgb(img, 8.0, TissueParams())
    c = int(0.35 * 512), int(0.45 * 512)
    assert mask[c[1], c[0]]  # the hole in the big ellipse
    assert not mask[:20, :20].any()


def test_pen_marks_are_not_tissue():
    img = render(512, 512, "HE", seed=3)
    img[20:30, 50:450] = (20, 40, 170)  # blue marker line on glass
    img[470:480, 50:450] = (30, 140, 40)  # green marker
    img[200:400, 480:490] = (15, 15, 15)  # black marker
    mask, _, pen = segment_rgb(img, 8.0, TissueParams())
    assert not mask[20:30].any() and not mask[470:480].any() and not mask[:, 480:490].any()
    assert pen > 0.01
    assert _iou(mask, _truth(512)) > 0.9
    off, _, _ = segment_rgb(img, 8.0, TissueParams(pen_filter=False))
    assert off[20:30, 100:400].any()  # without the filter the ink would count as tissue


def test_blank_slide_has_no_tissue(slide_factory):
    p = slide_factory("blank.svs", blank=True)
    with open_slide(p) as wsi, pytest.raises(SlideError, match="no tissue found in .*blank.svs"):
        segment_tissue(wsi)


def test_uniform_glass_tint_is_not_tissue():
    img = np.empty((256, 256, 3), np.uint8)
    img[:] = BACKGROUND
    img[:, 128:] = (236, 236, 246)  # slightly bluish glass region
    mask, _, _ = segment_rgb(img, 8.0, TissueParams())
    assert not mask.any()


def test_mask_geometry_qc_and_png(he_slide, tmp_path):
    with open_slide(he_slide) as wsi:
        m = segment_tissue(wsi, TissueParams(seg_mpp=8.0))
        assert m.downsample == pytest.approx(16.0) and m.mpp == pytest.approx(8.0)
        assert m.mask.shape == (96, 96)
        truth_mm2 = _truth(1536).sum() * (0.5e-3) ** 2
        assert m.area_mm2() == pytest.approx(truth_mm2, rel=0.08)
        qc = slide_qc(wsi, m)
        png = save_qc_png(wsi, m, tmp_path / "qc" / "x.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:  # the 96-px mask is drawn on a ≥ 1000-px re-read of the slide
        assert im.size[0] == 1000 and 1000 < im.size[1] < 1100  # + the title strip
        rgb = np.asarray(im.convert("RGB")).astype(int)
    outline = (np.abs(rgb - [0, 230, 0]).sum(-1) < 10).sum()
    assert outline > 2 * 1000  # two ellipses' outlines, ≥ 2 px wide
    assert qc["tissue_area_mm2"] == pytest.approx(m.area_mm2(), rel=1e-3)
    assert qc["mpp"] == 0.5 and qc["vendor"] == "aperio"
    assert qc["level0_width"] == 1536 and qc["level0_height"] == 1536
    assert len(qc["od_mean"]) == 3 and len(qc["od_std"]) == 3
    # H&E is pink/purple: green is absorbed most
    assert qc["od_mean"][1] > qc["od_mean"][0] and qc["od_mean"][1] > qc["od_mean"][2]


def test_qc_png_of_a_slide_smaller_than_1000_px_is_full_size(tmp_path):
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, render(600, 400, "HE", seed=3), photometric="rgb")
    with open_slide(path, mpp=0.5) as wsi:
        m = segment_tissue(wsi, TissueParams(seg_mpp=4.0))
        coords = np.array([[100, 100], [300, 200]])
        png = save_qc_png(wsi, m, tmp_path / "small.png", coords, 64)
    with Image.open(png) as im:
        assert im.size[0] == 600 and im.size[1] > 400
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert (np.abs(rgb - [30, 60, 255]).sum(-1) < 10).sum() >= 4 * 64  # two patch boxes
