import numpy as np
import pytest
import torch

from cscl.errors import InputError
from cscl.wsi.dataset import PatchDataset
from cscl.wsi.patching import patch_grid, patch_size_level0
from cscl.wsi.readers import open_slide
from cscl.wsi.tissue import segment_tissue


@pytest.fixture(scope="module")
def slide_and_mask(he_slide):
    wsi = open_slide(he_slide)
    yield wsi, segment_tissue(wsi)
    wsi.close()


def test_patch_size_level0_formula():
    assert patch_size_level0(224, 1.0, 0.25) == 896
    assert patch_size_level0(224, 0.5, 0.2527) == round(224 * 0.5 / 0.2527)
    assert patch_size_level0(256, 1.0, 1.0) == 256


def test_grid_coords_and_level(slide_and_mask):
    wsi, mask = slide_and_mask
    g = patch_grid(wsi, mask, target_mpp=1.0, patch_size=64, min_tissue=0.25)
    assert g.coords.dtype == np.int64 and g.coords.shape[1] == 2 and len(g) > 20
    assert g.patch_size_level0 == 128 and g.level == 0 and g.read_size == 128
    assert (g.coords % 128 == 0).all()
    assert (g.coords + 128 <= 1536).all()
    assert (g.tissue >= 0.25).all()
    # coarser target → the 4× pyramid level is read, not level 0
    g2 = patch_grid(wsi, mask, target_mpp=2.0, patch_size=64, min_tissue=0.25)
    assert g2.level == 1 and g2.read_size == 64 and g2.patch_size_level0 == 256
    attrs = g.coord_attrs(wsi)
    assert attrs["mpp_level0"] == 0.5 and attrs["target_mpp"] == 1.0
    assert attrs["level0_width"] == 1536 and attrs["patch_size_level0"] == 128


def test_min_tissue_filters(slide_and_mask):
    wsi, mask = slide_and_mask
    n = [len(patch_grid(wsi, mask, 1.0, 64, t)) for t in (0.01, 0.25, 0.75, 1.0)]
    assert n[0] > n[1] > n[2] >= n[3] > 0
    with pytest.raises(InputError, match="min-tissue"):
        patch_grid(wsi, mask, 1.0, 64, 1.5)


def test_patch_from_pyramid_level_matches_level0(slide_and_mask):
    wsi, mask = slide_and_mask
    g = patch_grid(wsi, mask, target_mpp=2.0, patch_size=64, min_tissue=0.5)
    coarse = PatchDataset(wsi, g.coords, g.level, g.read_size, 64)
    fine = PatchDataset(wsi, g.coords, 0, g.patch_size_level0, 64)  # level 0, resized
    a, b = coarse[[0, 1]], fine[[0, 1]]
    assert a["error"] is None and a["images"].shape == (2, 3, 64, 64)
    pool = (
        torch.nn.functional.avg_pool2d
    )  # the fixture's level 1 is point-sampled: compare 8×8 means
    diff = (pool(a["images"].float(), 8) - pool(b["images"].float(), 8)).abs().mean()
    assert diff < 5  # same tissue; only resampling/JPEG differences
