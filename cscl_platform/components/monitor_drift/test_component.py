"""The monitoring pipeline (one monitor_drift task) compiles and runs with kfp.local on a tiny
log set; its HTML report, Metrics and verdict come out."""

from __future__ import annotations

import json
import re

import yaml

from cscl.monitoring.reference import write_reference
from cscl.monitoring.simulate import RecordModel, make_records, write_records
from cscl.synthetic import ShiftSpec


def test_monitoring_pipeline_runs_locally(tmp_path):
    from cscl_platform.pipelines.local import run_local

    model = RecordModel(dim=8, seed=3)
    ref = model.sample(60, seed=1)
    write_reference(tmp_path / "bundle", ref["embeddings"], ref["predictions"], ref["qc"], "v1")
    shifted = model.sample(40, seed=2, shift=ShiftSpec(stain=0.8))
    write_records(str(tmp_path / "proj"), make_records(shifted, "v1", "2026-11-02"))
    policy = tmp_path / "policy.yaml"  # embedding only: one fast Evidently metric
    policy.write_text(
        yaml.safe_dump(
            {"signals": {k: {"enabled": False} for k in ("qc", "predictions", "target")}}
        )
    )
    res = run_local(
        "monitoring",
        {
            "model_version": "v1",
            "logs_uri": str(tmp_path / "proj"),
            "reference_uri": str(tmp_path / "bundle"),
            "since": "2026-11-01",
            "until": "2026-11-03",
            "policy_uri": str(policy),
        },
        tmp_path / "kfp",
    )
    html = res.find("monitor-drift", "report").read_text()
    assert "slide_embedding" in html
    # what the Kubeflow UI shows opens with our verdict, above Evidently's page
    body = html[re.search(r"<body[^>]*>", html, re.I).end() :].lstrip()
    assert body.startswith('<div id="cscl-verdict"') and "Verdict: DRIFT" in body[:2000]
    drift = json.loads(res.find("monitor-drift", "drift_json").read_text())
    assert drift["verdict"] == "drift" and drift["retraining"]["action"] == "none"
    (metrics,) = [m for k, m in res.metrics.items() if k.endswith("/metrics")]
    assert metrics["drift"] == 1.0 and metrics["n_current"] == 40.0
    assert metrics["embedding_auc"] > metrics["embedding_threshold"]
    # the report also lands where the contract puts it
    assert (tmp_path / "proj" / "monitoring" / "v1_2026-11-01_2026-11-03" / "drift.html").exists()


def test_monitoring_pipeline_compiles_for_a_cluster(tmp_path):
    from cscl_platform.pipelines.compile import compile_pipeline

    docs = list(
        yaml.safe_load_all(compile_pipeline("monitoring", tmp_path, version="t").read_text())
    )
    spec = docs[0]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"model_version", "logs_uri", "reference_uri", "window_days", "trigger"} <= set(params)
    assert params["window_days"]["defaultValue"] == 7
    k8s = json.dumps(docs[1:])  # platform spec: S3 secret + optional trigger-token secret
    assert "cscl-s3-credentials" in k8s and "cscl-retrain-credentials" in k8s
