"""The `make demo` monitoring step end to end on a tiny packaged model: slides from another lab →
the serving Predictor → inference-log records (cscl.inference_log) → one monitoring run.

Also the integration check that records written by the serving path are read without a single
skip (same contract on both sides)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cscl.monitoring.drift import compute_drift
from cscl.monitoring.logs import LogWindow
from cscl.monitoring.policy import load_policy
from cscl.monitoring.reference import load_reference
from cscl.monitoring.schema import flatten_predictions, flatten_qc
from cscl_platform.monitoring.demo import demo_step

SERVING_TESTS = Path(__file__).resolve().parents[1] / "serving"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    sys.path.insert(0, str(SERVING_TESTS))
    try:
        import serving_fixtures as fx
    except ImportError:
        pytest.skip("tests/serving/serving_fixtures.py (tiny packaged model) is not available")
    finally:
        sys.path.remove(str(SERVING_TESTS))
    root = tmp_path_factory.mktemp("pkg")
    return fx.package(root, fx.tiny_run(root / "run"))


@pytest.mark.slow
def test_demo_step_logs_shifted_predictions_and_gives_a_verdict(packaged, tmp_path, capsys):
    bundle = packaged["bundle"]
    assert (bundle / "reference.parquet").exists(), "cscl package writes the reference set"
    ctx = SimpleNamespace(
        run=SimpleNamespace(artifacts={"package/bundle": bundle}),
        out_dir=tmp_path,
        project_prefix=str(tmp_path / "proj"),
    )
    res = demo_step(ctx)
    out = capsys.readouterr().out
    assert "logged 10 predictions" in out and f"verdict: {res.verdict}" in out
    assert res.drift["records"] == {"files": 10, "used": 10, "skipped": {}}
    assert res.verdict in {"drift", "no drift"}
    assert (Path(res.report_uri) / "drift.html").exists()
    assert res.drift["signals"]["qc"]["columns"]["qc_mpp"]["drifted"]  # the other lab's scanner


def test_missing_bundle_is_skipped(tmp_path, capsys):
    ctx = SimpleNamespace(run=SimpleNamespace(artifacts={}), out_dir=tmp_path,
                          project_prefix=str(tmp_path))  # fmt: skip
    assert demo_step(ctx) is None
    assert "skipped" in capsys.readouterr().out


def test_tiny_windows_skip_the_embedding_signal(bundle, record_model):
    ref = load_reference(str(bundle))
    c = record_model.sample(2, seed=3)

    q = [flatten_qc(x) for x in c["qc"]]
    w = LogWindow("v1", "d", "d", ["a", "b"], ["a", "b"], c["embeddings"],
                  np.asarray([v for v, _ in q], np.float32), [v for _, v in q],
                  np.asarray([flatten_predictions(p, ref.pred_columns) for p in c["predictions"]],
                             np.float32), ref.pred_columns)  # fmt: skip
    s = compute_drift(ref, w, load_policy()).signals["embedding"]
    assert s.status == "skipped" and "too few rows" in s.reason
