"""`cscl pipeline submit` against a loopback server speaking the KFP REST API (v2beta1)."""

from __future__ import annotations

import yaml
from kfp_api_server import FakeKfpApi

from cscl.cli import main


def test_submit_creates_pipeline_then_adds_versions(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # dist/pipelines is written here
    monkeypatch.setenv("KFP_TOKEN", "t0ken")
    with FakeKfpApi() as api:
        rc = main(["pipeline", "submit", "--host", api.url, "--name", "training",
                   "--experiment", "cscl-ci", "--run-name", "nightly", "--no-caching",
                   "-p", "manifest_uri=s3://b/cohorts/x/manifest.csv", "-p", "num_shards=3",
                   "-p", "min_score=0.7", "-p", "allow_random=false",
                   "--s3-endpoint", "http://minio:9000"])  # fmt: skip
        assert rc == 0
        # 1) the pipeline did not exist: uploaded as a new pipeline, then the versioned package
        [up] = api.calls("POST", "/pipelines/upload")
        assert up.query["name"] == ["cscl-training"]
        spec = next(yaml.safe_load_all(up.files["uploadfile"]))
        assert spec["pipelineInfo"]["name"] == "cscl-training"
        [ver] = api.calls("POST", "/pipelines/upload_version")
        pid = next(iter(api.pipelines))
        assert ver.query["pipelineid"] == [pid]
        version = ver.query["name"][0].removesuffix("-nocache")
        assert version.startswith("0.1.0-") and ver.query["name"][0].endswith("-nocache")
        assert (tmp_path / "dist" / "pipelines" / f"training-{version}.yaml").is_file()
        # the uploaded package is the cluster build: S3 Secret + GPU for extraction
        text = ver.files["uploadfile"].decode()
        assert "cscl-s3-credentials" in text and "nvidia.com/gpu" in text
        # --no-caching is baked into the uploaded version: every task, nested DAGs included
        assert "enableCache: false" in text and "enableCache: true" not in text
        assert up.headers.get("authorization") == "Bearer t0ken"
        # 2) experiment created by name, 3) run of exactly that version with typed parameters
        [exp] = api.calls("POST", "/experiments")
        assert exp.json["display_name"] == "cscl-ci"
        [run] = api.calls("POST", "/runs")
        body = run.json
        assert body["display_name"] == "nightly"
        assert body["experiment_id"] == next(iter(api.experiments))
        ref = body["pipeline_version_reference"]
        assert ref == {"pipeline_id": pid, "pipeline_version_id": api.versions[pid][-1][
            "pipeline_version_id"]}  # fmt: skip
        params = body["runtime_config"]["parameters"]
        assert params == {
            "manifest_uri": "s3://b/cohorts/x/manifest.csv",
            "num_shards": 3,
            "min_score": 0.7,
            "allow_random": False,
            "s3_endpoint": "http://minio:9000",
        }
        assert body.get("pipeline_spec") is None  # runs reference the uploaded version
        assert "run " in capsys.readouterr().out

        # A second submit of the same pipeline only adds a version and reuses the experiment.
        rc = main(["pipeline", "submit", "--host", api.url, "--name", "training",
                   "--package", str(tmp_path / "dist" / "pipelines" / f"training-{version}.yaml"),
                   "--experiment", "cscl-ci"])  # fmt: skip
        assert rc == 0
        assert len(api.calls("POST", "/pipelines/upload")) == 1
        assert len(api.calls("POST", "/pipelines/upload_version")) == 2
        assert len(api.calls("POST", "/experiments")) == 1
        assert len(api.calls("POST", "/runs")) == 2
        second = api.calls("POST", "/runs")[-1].json
        assert second["display_name"] == f"cscl-training-{version}"


def test_submit_rejects_unknown_parameter(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with FakeKfpApi() as api:
        rc = main(["pipeline", "submit", "--host", api.url, "-p", "nope=1"])
        assert rc == 2
        assert "has no parameter 'nope'" in capsys.readouterr().err
        assert api.requests == []  # nothing sent


def test_submit_unreachable_host(tmp_path, monkeypatch, capsys):
    import socket

    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["pipeline", "submit", "--host", f"http://127.0.0.1:{port}"])
    assert rc == 2
    assert f"cannot reach the Kubeflow Pipelines API at http://127.0.0.1:{port}" in (
        capsys.readouterr().err
    )
