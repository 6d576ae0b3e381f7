"""Fixtures for the wsi tests: a tiny slide cohort (real tiled TIFFs), a loopback S3 server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from slides import make_cohort, render, write_slide  # noqa: E402

from cscl.wsi.extract import ExtractConfig  # noqa: E402
from cscl.wsi.tissue import TissueParams  # noqa: E402


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """Manifest of 2 synthetic cases × (HE, KI67), 2000×1500 px at 0.5 µm/px (read-only)."""
    root = tmp_path_factory.mktemp("cohort")
    try:
        from cscl.synthetic.testing import tiny_cohort
    except ImportError:  # the generator is optional for these tests: fall back to own slides
        return make_cohort(root, n_cases=2)
    return tiny_cohort(root, n_cases=2, seed=0, stains=("HE", "KI67"))


@pytest.fixture(scope="session")
def he_slide(tmp_path_factory) -> Path:
    """An H&E slide of known geometry (two ellipses, 1536² px, 0.5 µm/px, levels 1 and 4)."""
    return make_cohort(tmp_path_factory.mktemp("own"), n_cases=1).parent / "slides/case000_HE.svs"


@pytest.fixture(scope="session")
def encoder():
    from cscl.wsi.encoders import load_encoder

    return load_encoder("test_resnet", allow_random=True, device="cpu", seed=0)


@pytest.fixture
def cfg() -> ExtractConfig:
    return ExtractConfig(
        backbone="test_resnet",
        allow_random=True,
        patch_size=64,
        target_mpp=1.0,
        batch_size=16,
        num_workers=0,
        torch_threads=1,  # the test machine's cores are shared: avoid spin-waiting threads
        tissue=TissueParams(),
    )


@pytest.fixture
def slide_factory(tmp_path):
    """Write a slide: make(name, stain=..., blank=..., mpp=..., fmt=..., mag=..., size=...)."""

    def make(
        name="s.svs", stain="HE", blank=False, mpp=0.5, fmt="aperio", mag=None, size=1024, img=None
    ):
        img = render(size, size, stain, seed=3, blank=blank) if img is None else img
        return write_slide(tmp_path / name, img, mpp=mpp, fmt=fmt, mag=mag)

    return make
