"""Fixtures for platform tests: a real S3 server (moto, HTTP on 127.0.0.1) and tiny cohorts."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path (tests/conftest.py has no package), so this folder would shadow
# the top-level `pipelines` package as a namespace package. Put the repository root first.
_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
_mod = sys.modules.get("pipelines")
if _mod is not None and getattr(_mod, "__file__", None) is None:
    del sys.modules["pipelines"]

from cscl_platform.demo import local_s3  # noqa: E402


@pytest.fixture(scope="session")
def s3_endpoint():
    """One moto S3 server for the session; dummy credentials exported while it runs."""
    with local_s3() as url:
        yield url


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh, empty bucket per test so tests cannot see each other's objects."""
    from cscl.io.storage import ensure_bucket

    name = f"t-{uuid.uuid4().hex[:12]}"
    ensure_bucket(name)
    return name


@pytest.fixture(scope="session")
def tiny_cohort_dir(tmp_path_factory):
    """3 cases × (HE, HER2), 1600×1200 px at 0.5 µm/px: the smallest cohort that trains."""
    from cscl.synthetic.testing import tiny_cohort

    out = tmp_path_factory.mktemp("cohort")
    tiny_cohort(out, n_cases=3, stains=("HE", "HER2"), width=1600, height=1200)
    return out


@pytest.fixture(scope="session")
def s3_cohort(s3_endpoint, tiny_cohort_dir):
    """The tiny cohort uploaded to `s3://cohort-bucket/proj/cohorts/tiny/`; its manifest URI."""
    from cscl.ingest import upload_folder

    upload_folder(tiny_cohort_dir, "s3://cohort-bucket/proj/cohorts/tiny")
    return "s3://cohort-bucket/proj/cohorts/tiny/manifest.csv"


@pytest.fixture(scope="session")
def tiny_extract_config():
    """Factory of ExtractConfig for tests (keywords override)."""
    return _tiny_extract_config


def _tiny_extract_config(**kw):
    """A random-init tiny timm backbone at low resolution: a few patches per slide."""
    from cscl.wsi.extract import ExtractConfig

    base = dict(
        backbone="test_resnet", allow_random=True, target_mpp=2.0, patch_size=64, num_workers=0
    )
    base.update(kw)
    return ExtractConfig(**base)
