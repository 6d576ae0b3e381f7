"""`cscl pipeline compile`: every pipeline compiles, for a cluster and for kfp.local, into a
versioned package; cluster-only settings appear only in the cluster build."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from cscl import __version__
from cscl.cli import main
from cscl.runtime import git_commit
from cscl_platform.pipelines import PIPELINES, available
from cscl_platform.pipelines.compile import pipeline_version


def _docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def test_version_is_package_version_plus_commit():
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    v = pipeline_version()
    assert v.startswith(f"{__version__}-{sha}")
    assert git_commit(short=True).split(".")[0] == sha


def test_training_and_retraining_are_available():
    assert {"training", "retraining"} <= set(available()) <= set(PIPELINES)


@pytest.mark.parametrize("local", [False, True])
def test_compile_all(tmp_path, local, capsys):
    args = ["pipeline", "compile", "--out", str(tmp_path), "--version", "9.9.9-test"]
    assert main(args + (["--local"] if local else [])) == 0
    for name in available():
        path = tmp_path / f"{name}-9.9.9-test.yaml"
        assert path.is_file(), capsys.readouterr().out
        docs = _docs(path)
        spec = docs[0]
        assert spec["pipelineInfo"]["name"] == f"cscl-{name}"
        assert spec["root"]["inputDefinitions"]["parameters"]  # parameters with defaults
        platform = docs[1] if len(docs) > 1 else {}
        text = path.read_text()
        if local:
            assert "cscl-s3-credentials" not in text and "accelerator" not in text
        elif name in ("training", "retraining"):
            k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
            ex = next(v for k, v in k8s.items() if "extract-features" in k)
            assert ex["secretAsEnv"][0]["secretName"] == "cscl-s3-credentials"
            assert ex["nodeSelector"]["labels"] == {"cscl.io/node-pool": "gpu"}
            assert ex["tolerations"][0]["key"] == "nvidia.com/gpu"
            res = spec["deploymentSpec"]["executors"]
            extract = next(v for k, v in res.items() if "extract-features" in k)
            acc = extract["container"]["resources"]["accelerator"]
            assert acc.get("resourceType", acc.get("type")) == "nvidia.com/gpu"


def test_training_graph_has_fanout_and_gates(tmp_path):
    from cscl_platform.pipelines.compile import compile_pipeline

    spec = _docs(compile_pipeline("training", tmp_path, cluster=False, version="x"))[0]
    text = yaml.safe_dump(spec)
    assert "parameterIterator" in text  # dsl.ParallelFor over the shard ids
    assert "triggerPolicy" in text  # dsl.If gates (validation, quality)
    comps = set(spec["components"])
    for c in ("comp-ingest", "comp-validate", "comp-extract-features", "comp-collect-features",
              "comp-register", "comp-pretrain-adapter", "comp-pretrain-slide-encoder",
              "comp-embed", "comp-evaluate", "comp-package", "comp-deploy", "comp-stop-run"):  # fmt: skip
        assert c in comps, c


@pytest.mark.parametrize("name", ["training", "retraining"])
def test_cluster_build_bounds_every_task_and_only_deploy_gets_api_credentials(tmp_path, name):
    """Every task of a cluster build has CPU and memory requests and limits (a task parsing a
    hostile slide cannot starve its node); only the deploy task mounts the deployer kubeconfig."""
    from cscl_platform.pipelines.compile import compile_pipeline
    from cscl_platform.pipelines.training import DEPLOYER_KUBECONFIG_SECRET

    spec, platform = _docs(compile_pipeline(name, tmp_path, cluster=True, version="x"))[:2]
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) >= 13
    for ex_name, ex in executors.items():
        res = ex["container"].get("resources", {})
        for key in ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"):
            assert res.get(key), f"{ex_name} has no {key}"
        assert res["cpuRequest"] <= res["cpuLimit"] and res["memoryRequest"] <= res["memoryLimit"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounting = {k for k, v in k8s.items()
                for vol in v.get("secretAsVolume", []) if vol["secretName"] == DEPLOYER_KUBECONFIG_SECRET}  # fmt: skip
    assert mounting == {"exec-deploy"}
    local = _docs(compile_pipeline(name, tmp_path / "local", cluster=False, version="x"))[0]
    assert not any(
        ex["container"].get("resources") for ex in local["deploymentSpec"]["executors"].values()
    )
