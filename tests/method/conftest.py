"""Fixtures for the method tests: a tiny feature-level cohort (HDF5 feature files + manifest +
labels + true transforms) written once per session; tiny model sizes."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sim(tmp_path_factory) -> dict:
    from cscl.train.simulate import SimConfig, simulate_cohort

    return simulate_cohort(
        tmp_path_factory.mktemp("sim"), SimConfig(n_cases=10, dim=32, grid=7, seed=1)
    )


@pytest.fixture(scope="session")
def cohort(sim):
    from cscl.data import load_cohort

    return load_cohort(sim["features"], str(sim["manifest"]))


@pytest.fixture(scope="session")
def regs(sim):
    from cscl.registration import load_registrations

    return load_registrations(sim["transforms"])


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models: one thread is fastest, and the shared CPU is not oversubscribed."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
