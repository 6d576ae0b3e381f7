"""Fixtures for the tests on real public pathology material (../shared/data/real, never committed;
see realdata.py): every test here skips with a message naming the folder when it is absent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from realdata import CMU, TCGA  # noqa: E402


@pytest.fixture(scope="session")
def real_slides() -> dict[str, Path]:
    """{"cmu": Aperio JPEG 0.499 µm/px, "tcga": Aperio JPEG 2000 without mpp}; skips if absent."""
    missing = [p for p in (CMU, TCGA) if not p.is_file()]
    if missing:
        pytest.skip(f"real slides absent: {missing[0]} (see ../shared/data/real/README.md)")
    return {"cmu": CMU, "tcga": TCGA}
