"""The retraining trigger against loopback stand-ins of the Kubeflow Pipelines and GitHub APIs
(the one boundary that cannot run here): the request bodies are asserted."""

from __future__ import annotations

import pytest

from cscl.errors import InputError
from cscl_platform.monitoring.trigger import (
    GithubTarget,
    KfpTarget,
    TriggerError,
    trigger_github,
    trigger_kfp,
)

KFP = "/apis/v2beta1"


def test_kfp_trigger_creates_one_run_of_newest_retraining_version(kfp_standin):
    target = KfpTarget(host=kfp_standin.url, params={"cohort_uri": "s3://b/cohorts/new"})
    out = trigger_kfp(target, "retrain-v1-drift", {"previous_model_version": "v1"})
    assert out["run_id"] == "run-42"
    assert out["version_id"] == "ver-9" and out["pipeline_id"] == "pipe-1"
    (lookup,) = kfp_standin.calls("GET", f"{KFP}/pipelines")
    assert "cscl-retraining" in lookup["query"]["filter"][0]
    (versions,) = kfp_standin.calls("GET", f"{KFP}/pipelines/pipe-1/versions")
    assert versions["query"]["sort_by"] == ["created_at desc"]
    (exp,) = kfp_standin.calls("POST", f"{KFP}/experiments")
    assert exp["body"]["display_name"] == "cscl-retraining"
    (run,) = kfp_standin.calls("POST", f"{KFP}/runs")
    body = run["body"]
    assert body["display_name"] == "retrain-v1-drift"
    assert body["experiment_id"] == "exp-1"
    assert body["pipeline_version_reference"] == {
        "pipeline_id": "pipe-1",
        "pipeline_version_id": "ver-9",
    }
    assert body["runtime_config"]["parameters"] == {
        "cohort_uri": "s3://b/cohorts/new",
        "previous_model_version": "v1",
    }


def test_kfp_trigger_unknown_pipeline_is_a_clear_error(kfp_standin):
    with pytest.raises(TriggerError, match="no pipeline named 'other'"):
        trigger_kfp(KfpTarget(host=kfp_standin.url, pipeline_name="other"), "r", {})
    assert not kfp_standin.calls("POST", f"{KFP}/runs")


def test_kfp_trigger_unreachable_host():
    with pytest.raises(TriggerError, match="Kubeflow Pipelines at http://127.0.0.1:9"):
        trigger_kfp(KfpTarget(host="http://127.0.0.1:9"), "r", {})


def test_github_dispatch_body_and_auth(github_standin):
    target = GithubTarget(repo="acme/cscl", api_url=github_standin.url, ref="release")
    out = trigger_github(target, {"model_version": "v1", "reason": "drift"})
    assert out["status"] == 204
    (req,) = github_standin.calls("POST", github_standin.dispatch_path)
    assert req["body"] == {"ref": "release", "inputs": {"model_version": "v1", "reason": "drift"}}
    assert req["headers"]["Authorization"] == "Bearer ghp_test_token"
    assert req["headers"]["Accept"] == "application/vnd.github+json"


def test_github_dispatch_errors(github_standin, monkeypatch):
    bad = GithubTarget(repo="acme/other", api_url=github_standin.url)
    with pytest.raises(TriggerError, match="HTTP 404"):
        trigger_github(bad, {})
    monkeypatch.delenv("GITHUB_TOKEN")
    with pytest.raises(InputError, match=r"\$GITHUB_TOKEN is not set"):
        trigger_github(GithubTarget(repo="acme/cscl", api_url=github_standin.url), {})
