"""Small, fast synthetic cohorts for other parts' tests (stable signature)."""

from __future__ import annotations

import os
from pathlib import Path

from cscl.synthetic.cohort import generate_cohort


def tiny_cohort(tmp_dir: str | os.PathLike, n_cases: int = 4, seed: int = 0, **kw) -> Path:
    """A 2000×1500 px, 0.5 mpp, HE+HER2+KI67 cohort in `tmp_dir`; returns its manifest.csv.

    Any `generate_cohort` keyword overrides the defaults (e.g. stains=, width=, fmt=, shift=).
    Runs in-process (workers=1) unless told otherwise, and without a progress bar.
    """
    kw.setdefault("stains", ("HE", "HER2", "KI67"))
    kw.setdefault("width", 2000)
    kw.setdefault("height", 1500)
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return generate_cohort(Path(tmp_dir), n_cases=n_cases, seed=seed, **kw)
