"""The `--device cuda` extraction path on a real GPU: same features as the CPU (within TF32/bf16
arithmetic), and no CUDA synchronisation per batch inside `compute_features` (the copy back is
waited for through an event, a batch late). Skipped without a visible CUDA GPU."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from cscl.wsi.encoders import load_encoder
from cscl.wsi.extract import compute_features, prepare_run
from cscl.wsi.patching import patch_grid
from cscl.wsi.readers import open_slide
from cscl.wsi.tissue import segment_tissue

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU visible (torch.cuda.is_available() False)"
)


def _grid(wsi, cfg, repeat: int = 1):
    grid = patch_grid(wsi, segment_tissue(wsi, cfg.tissue), cfg.target_mpp, cfg.patch_size, cfg.min_tissue)  # fmt: skip
    return replace(grid, coords=np.tile(grid.coords, (repeat, 1)))


@pytest.mark.parametrize("precision, rtol", [("fp32", 1e-2), ("bf16", 5e-2)])
def test_cuda_features_match_cpu(he_slide, cfg, precision, rtol):
    cpu = load_encoder(cfg.backbone, allow_random=True, device="cpu", seed=0)
    gpu = load_encoder(cfg.backbone, allow_random=True, device="cuda", seed=0)
    c = replace(cfg, num_workers=2, precision=precision, device="cuda")
    prepare_run(c, gpu)
    assert torch.backends.cudnn.benchmark
    with open_slide(he_slide, "tifffile") as wsi:
        grid = _grid(wsi, cfg)
        a = compute_features(wsi, grid, replace(c, precision="fp32", device="cpu"), cpu)
        b = compute_features(wsi, grid, c, gpu)
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    assert np.median(rel) < rtol, (precision, np.median(rel))


def test_no_cuda_sync_per_batch(he_slide, cfg):
    gpu = load_encoder(cfg.backbone, allow_random=True, device="cuda", seed=0)
    c = replace(cfg, num_workers=2, device="cuda", batch_size=8)
    prepare_run(c, gpu)
    with open_slide(he_slide, "tifffile") as wsi:
        grid = _grid(wsi, cfg, repeat=4)
        compute_features(wsi, grid, c, gpu)  # warm-up: allocator, cuDNN autotuning
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                feats = compute_features(wsi, grid, c, gpu)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert len(feats) > 4 * c.batch_size and syncs == [], syncs[:3]
