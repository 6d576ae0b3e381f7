"""One small 5-stain cohort shared by the synthetic tests (built once per session)."""

from __future__ import annotations

import pytest

from cscl.synthetic.biology import make_biology


def _seed_with_both_statuses(n_cases: int) -> int:
    """First seed whose cases include HER2+/- and KI67 high/low, ER+/- (tests need contrasts)."""
    for seed in range(200):
        b = make_biology(n_cases, seed)
        if all(len({getattr(c, a) for c in b}) == 2 for a in ("her2", "ki67_high", "er")):
            return seed
    raise AssertionError("no seed with both statuses")


@pytest.fixture(scope="session")
def cohort5(tmp_path_factory):
    """6 cases × HE, HER2, KI67, ER, PGR at 1500×1000 px (0.5 mpp)."""
    from cscl.synthetic import generate_cohort

    out = tmp_path_factory.mktemp("synth") / "cohort5"
    seed = _seed_with_both_statuses(6)
    manifest = generate_cohort(
        out, n_cases=6, seed=seed, width=1500, height=1000, workers=1, progress=False
    )
    return manifest
