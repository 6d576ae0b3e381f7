"""Every pipeline runs end to end with kfp.local (SubprocessRunner, use_venv=False) on a tiny
cohort served by a real S3 API on loopback: 4 cases × (HE, HER2), random tiny backbone, 1 epoch.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from cscl.io import storage
from cscl_platform.demo import DemoContext, demo_params, pick_tasks

pytestmark = pytest.mark.slow
PREFIX = "s3://pipe-bucket/proj"


@pytest.fixture(scope="session")
def pipeline_cohort(tmp_path_factory, s3_endpoint):
    from cscl.ingest import upload_folder
    from cscl.io.storage import ensure_bucket
    from cscl.synthetic.testing import tiny_cohort

    folder = tmp_path_factory.mktemp("pipe-cohort")
    tiny_cohort(folder, n_cases=4, stains=("HE", "HER2"), width=1600, height=1200)
    ensure_bucket("pipe-bucket")
    upload_folder(folder, f"{PREFIX}/cohorts/tiny4")
    return folder


def _params(folder, s3_endpoint, kind="training", cohort="tiny4", **kw):
    """The demo's tiny parameters, cut to what these assertions need: one label task, the k-fold
    protocol only (its AUC decides promotion), few bootstraps."""
    ctx = DemoContext(
        endpoint_url=s3_endpoint,
        out_dir=folder,
        cohort_dir=folder,
        manifest_uri=f"{PREFIX}/cohorts/{cohort}/manifest.csv",
        labels_uri=f"{PREFIX}/cohorts/{cohort}/labels.csv",
        project_prefix=PREFIX,
    )
    task = pick_tasks(folder / "labels.csv", folds=2).split(",")[0]
    return demo_params(ctx, kind, tasks=task, protocols="kfold", n_boot=10, **kw)


@pytest.fixture(scope="session")
def training_run(pipeline_cohort, s3_endpoint, tmp_path_factory):
    from cscl_platform.pipelines.local import run_local

    root = tmp_path_factory.mktemp("kfp-training")
    return run_local("training", _params(pipeline_cohort, s3_endpoint), root)


def test_training_pipeline_end_to_end(training_run, s3_endpoint):
    import builtins

    run = training_run
    # kfp.local's indented print (swapped per task) does not outlive the run
    assert builtins.print.__module__ == "builtins"
    # validation report + metrics
    assert "PASSED" in run.find("validate", "report").read_text()
    assert run.metrics["validate/metrics"]["pass_rate"] == 1.0
    # fan-out: two shards, all 8 slides extracted once, features stored by extractor hash
    shards = [k for k in run.artifacts if k.endswith("extract-features/shard_report")]
    assert len(shards) == 2
    ehash = run.metrics["collect-features/features"]["extractor_hash"]
    stored = storage.list_uris(f"{PREFIX}/features/{ehash}/")
    assert len(stored) == 8
    assert run.metrics["collect-features/metrics"]["slides_failed"] == 0
    # method stages
    assert run.metrics["register/metrics"]["pairs_ok"] == 4
    assert (run.find("pretrain-slide-encoder", "model") / "config.json").is_file()
    emb = pd.read_parquet(run.find("embed", "embeddings"))
    assert len(emb) == 4 and (emb["stain"] == "HE").all()
    # evaluation artifacts the UI shows
    assert "<html" in run.find("evaluate", "report").read_text().lower()
    evaluated = [k for k, v in run.metrics.items() if k.startswith("evaluate/classification_")
                 and "confusionMatrix" in v]  # fmt: skip
    assert len(evaluated) == 1  # one ClassificationMetrics per evaluated classification task
    assert "quality_score" in run.metrics["evaluate/metrics"]
    # gate passed (min_score 0) → packaged under models/<name>/<version>/ → deploy recorded
    uri = run.metrics["package/bundle"]["model_uri"]
    assert uri.startswith(f"{PREFIX}/models/cscl/")
    names = {u[len(uri) :] for u in storage.list_uris(uri)}
    assert {"model.mar", "bundle/bundle.json", "model_card.md", "metrics.json"} <= names
    assert "# Model card" in run.find("package", "model_card").read_text()
    assert "InferenceService" in run.find("deploy", "deployment").read_text()


def test_retraining_reuses_features_and_promotes_only_if_better(
    training_run, pipeline_cohort, s3_endpoint, tmp_path_factory
):
    from cscl_platform.pipelines.local import run_local

    current = training_run.metrics["package/bundle"]["model_uri"]
    root = tmp_path_factory.mktemp("kfp-retraining")
    # min_improvement -1: any candidate counts as better, so the promote branch runs
    params = _params(
        pipeline_cohort, s3_endpoint, "retraining", current_model_uri=current, min_improvement=-1.0
    )
    run = run_local("retraining", params, root)
    assert run.metrics["collect-features/metrics"]["slides_reused"] == 8  # nothing re-extracted
    assert run.metrics["collect-features/metrics"]["slides_extracted"] == 0
    report = run.find("compare-models", "comparison").read_text()
    assert "PROMOTE" in report and "| candidate | current |" in report
    assert run.metrics["embed-released/embeddings"]["model_uri"] == current
    new_uri = run.metrics["package/bundle"]["model_uri"]
    assert new_uri != current and storage.exists(f"{new_uri}model.mar")


def test_pipeline_stops_when_validation_fails(pipeline_cohort, s3_endpoint, tmp_path):
    """A case without H&E: the validate task stores its report, then the run fails. The bad
    cohort has 2 slides only (case000 HE, case001 HER2): slide QC is what this run spends on."""
    from cscl.ingest import upload_folder

    bad = tmp_path / "bad"
    shutil.copytree(pipeline_cohort, bad)
    m = pd.read_csv(bad / "manifest.csv")
    keep = ((m.case_id == "case000") & (m.stain == "HE")) | (
        (m.case_id == "case001") & (m.stain == "HER2")
    )
    m[keep].to_csv(bad / "manifest.csv", index=False)
    upload_folder(bad, f"{PREFIX}/cohorts/bad")
    root = tmp_path / "kfp"
    # through the CLI: parameters from a YAML file, typed by the pipeline's declarations
    import yaml

    from cscl.cli import main

    params = _params(pipeline_cohort, s3_endpoint, cohort="bad")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({k: str(v) for k, v in params.items()}))
    with pytest.raises(RuntimeError, match="stop-run"):
        main(["pipeline", "run-local", "--name", "training", "--pipeline-root", str(root),
              "--params-file", str(tmp_path / "params.yaml")])  # fmt: skip
    [run_dir] = list(root.iterdir())
    report = (run_dir / "validate" / "report").read_text()
    assert "FAILED" in report and "case_has_he" in report
    assert not (run_dir / "collect-features").exists()  # nothing after the gate ran
    out = json.loads((run_dir / "validate" / "executor_output.json").read_text())
    assert out["parameterValues"]["Output"] is False
