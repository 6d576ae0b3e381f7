"""Scheduling the monitoring pipeline as a recurring run (KFP API stand-in) and the manifests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests" / "base" / "monitoring"


def test_create_recurring_run_uploads_a_version_and_schedules_it(kfp_standin, mon, tmp_path):
    from cscl_platform.pipelines.compile import compile_pipeline
    from cscl_platform.pipelines.monitoring import create_recurring_run

    K = mon.KFP
    kfp_standin.routes[("POST", f"{K}/pipelines/upload")] = lambda q, b: (
        200,
        {"pipeline_id": "mon-1", "display_name": "cscl-monitoring"},
    )
    kfp_standin.routes[("POST", f"{K}/pipelines/upload_version")] = lambda q, b: (
        200,
        {"pipeline_id": "mon-1", "pipeline_version_id": "mv-1", "display_name": "0.1.0-x"},
    )
    kfp_standin.routes[("POST", f"{K}/recurringruns")] = lambda q, b: (
        200,
        {"recurring_run_id": "rr-1", "display_name": b["display_name"]},
    )
    params = {"model_version": "v1", "logs_uri": "s3://b/p", "reference_uri": "s3://b/m/v1/"}
    pkg = compile_pipeline("monitoring", tmp_path, version="0.1.0-x")
    out = create_recurring_run(kfp_standin.url, params, version_name="0.1.0-x", package=pkg)
    assert out == {
        "pipeline_id": "mon-1",
        "version_id": "mv-1",
        "experiment_id": "exp-1",
        "recurring_run_id": "rr-1",
    }
    (up,) = kfp_standin.calls("POST", f"{K}/pipelines/upload")
    assert up["query"]["name"] == ["cscl-monitoring"]
    assert b"cscl-monitoring" in up["body"]  # the compiled package travels in the upload
    (ver,) = kfp_standin.calls("POST", f"{K}/pipelines/upload_version")
    assert ver["query"]["name"] == ["0.1.0-x"] and ver["query"]["pipelineid"] == ["mon-1"]
    (rr,) = kfp_standin.calls("POST", f"{K}/recurringruns")
    body = rr["body"]
    assert body["display_name"] == "cscl-drift-daily"
    assert body["experiment_id"] == "exp-1" and body["mode"] == "ENABLE"
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * *"
    assert body["max_concurrency"] == "1" or body["max_concurrency"] == 1
    assert body["no_catchup"] is True
    assert body["pipeline_version_reference"] == {
        "pipeline_id": "mon-1",
        "pipeline_version_id": "mv-1",
    }
    assert body["runtime_config"]["parameters"] == params


def _docs():
    out = []
    for f in sorted(MANIFESTS.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return out


def test_manifests_are_valid_kubernetes():
    import kubernetes_validate

    kinds = {}
    for doc in _docs():
        if doc.get("kind") == "Kustomization":
            continue
        kubernetes_validate.validate(doc, "1.30", strict=True)
        kinds[doc["kind"]] = doc
    cron = kinds["CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:2] == ["cscl", "monitor"] and "--window-days" in c["args"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    text = yaml.safe_dump(kinds)
    assert "secretKeyRef" in text and "GITHUB_TOKEN" in text
    for secret in [d for d in _docs() if d.get("kind") == "Secret"]:
        assert not any(secret.get("stringData", {}).values()), "no secret values in manifests"


def test_kustomize_builds():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed on this machine (CI installs it)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True
    ).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert {"CronJob", "ConfigMap"} <= kinds
