"""Planted-signal embeddings: a few dimensions carry ER status, subtype and a survival factor,
so metrics are meaningful (high on the signal table, near chance on a pure-noise table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cscl.embeddings import write_embeddings

FAST = dict(n_boot=200, n_iter=3, inner_folds=3, draws=3)


def planted(n: int = 60, d: int = 64, seed: int = 0):
    """(labels DataFrame, signal X, noise X)."""
    rng = np.random.default_rng(seed)
    ids = [f"case{i:03d}" for i in range(n)]
    er = np.arange(n) % 2
    rng.shuffle(er)
    sub = np.arange(n) % 3
    rng.shuffle(sub)
    X = rng.normal(size=(n, d))
    X[:, :6] += 2.0 * er[:, None]
    X[:, 6:12] += 2.0 * np.eye(3)[sub][:, [0, 0, 1, 1, 2, 2]]
    z = rng.normal(size=n)
    X[:, 12:20] += 1.5 * z[:, None]  # survival factor: a high-variance direction
    t = rng.exponential(np.exp(-1.2 * z) * 20) + 0.1
    c = rng.exponential(40, n) + 1.0
    labels = pd.DataFrame(
        {
            "case_id": ids,
            "er_status": np.where(er == 1, "positive", "negative"),
            "subtype": np.array(["LumA", "LumB", "TNBC"])[sub],
            "os_time": np.minimum(t, c),
            "os_event": (t < c).astype(int),
        }
    )
    return labels, X, rng.normal(size=(n, d))


def meta_for(ids) -> pd.DataFrame:
    ids = list(ids)
    return pd.DataFrame(
        {"case_id": ids, "slide_id": [f"{i}_HE" for i in ids], "stain": "HE", "model_version": "t"}
    )


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """Files on disk: labels.csv, signal.parquet, noise.parquet."""
    root = tmp_path_factory.mktemp("eval_cohort")
    labels, X, N = planted()
    labels.to_csv(root / "labels.csv", index=False)
    write_embeddings(root / "signal.parquet", meta_for(labels.case_id), X.astype(np.float32))
    write_embeddings(root / "noise.parquet", meta_for(labels.case_id), N.astype(np.float32))
    return root


@pytest.fixture(scope="session")
def make_planted():
    """The `planted(n, d, seed)` generator, for tests that need their own variant."""
    return planted


@pytest.fixture(scope="session")
def data():
    return planted()


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    """Small fits are slower with threaded BLAS on a shared CPU (threads spin-wait)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session", name="meta_for")
def _meta_for():
    return meta_for
