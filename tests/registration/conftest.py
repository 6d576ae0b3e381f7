"""One small synthetic cohort (true transforms known) shared by the registration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def reg_cohort(tmp_path_factory):
    from cscl.synthetic.testing import tiny_cohort

    return tiny_cohort(tmp_path_factory.mktemp("reg_cohort"), n_cases=3, seed=7)


@pytest.fixture(scope="session")
def reg_run(reg_cohort, tmp_path_factory):
    """`register_manifest` of the shared cohort, run once: (table, output folder)."""
    from cscl.registration import register_manifest

    out = tmp_path_factory.mktemp("reg_run") / "reg"
    return register_manifest(str(reg_cohort), str(out), progress=False), out
