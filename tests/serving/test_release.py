"""`cscl package --upload` layout and the cluster TorchServe config, served for real.

The init container script of manifests/base/serving/deployment fetches the uploaded `serving/`
folder from (loopback) S3; TorchServe then starts from that folder with the uploaded
config.properties (pod addresses swapped for free loopback ports) and answers a request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from serving_fixtures import DATA_BUCKET

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "manifests" / "base" / "serving"


def _init_script() -> str:
    dep = yaml.safe_load((SERVING / "deployment" / "deployment.yaml").read_text())
    [init] = dep["spec"]["template"]["spec"]["initContainers"]
    return init["args"][0]


def test_manifests_reference_secrets_by_name_only():
    docs = [d for p in SERVING.rglob("*.yaml") for d in yaml.safe_load_all(p.read_text()) if d]
    assert all(d.get("kind") != "Secret" for d in docs)
    envs = []

    def walk(node):
        if isinstance(node, dict):
            envs.extend(node.get("env") or [])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(docs)
    creds = [e for e in envs if e["name"].startswith("AWS_")]
    assert len(creds) == 9  # 3 keys x (init container, Deployment, InferenceService)
    for e in creds:
        assert "value" not in e
        assert e["valueFrom"]["secretKeyRef"]["name"] == "cscl-s3-credentials"


@pytest.mark.skipif(not __import__("shutil").which("kubectl"), reason="kubectl not installed")
def test_kustomizations_build_and_validate():
    import kubernetes_validate
    from kubernetes_validate import SchemaNotFoundError

    for target, kinds in (
        (SERVING, {"ConfigMap", "NetworkPolicy", "InferenceService"}),
        (SERVING / "deployment", {"ConfigMap", "NetworkPolicy", "Deployment", "Service"}),
    ):
        out = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        docs = [d for d in yaml.safe_load_all(out) if d]
        assert {d["kind"] for d in docs} == kinds
        for d in docs:
            try:
                kubernetes_validate.validate(d, "1.33.0", strict=True)
            except SchemaNotFoundError:
                assert d["kind"] == "InferenceService"
    isvc = yaml.safe_load((SERVING / "kserve" / "inferenceservice.yaml").read_text())
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-torchserve" and model["storageUri"].endswith("/serving")


@pytest.mark.torchserve
def test_upload_release_then_serve_it_like_the_cluster(packaged, made, s3, tmp_path):
    from cscl.io.storage import configure_store, list_uris
    from cscl_platform.serving.archive import upload_release
    from cscl_platform.serving.server import free_ports, start_torchserve

    prefix = f"s3://{DATA_BUCKET}/proj/models"
    configure_store(s3["endpoint"])
    try:
        dest = upload_release(packaged["bundle"], packaged["mar"], prefix, "cscl", "0.1.0+test")
        keys = {u[len(dest) :] for u in list_uris(dest)}
    finally:
        configure_store(None)
    assert dest == f"{prefix}/cscl/0.1.0_test/"
    assert {"model.mar", "bundle/bundle.json", "bundle/heads.json", "bundle/reference.parquet",
            "serving/config/config.properties", "serving/model-store/cscl.mar"} <= keys  # fmt: skip

    # the Deployment's init container, verbatim except for the mount point
    mnt = tmp_path / "mnt"
    script = _init_script().replace('"/mnt/models/"', repr(str(mnt) + "/"))
    env = {**os.environ, "MODEL_URI": dest + "serving", "AWS_ENDPOINT_URL": s3["endpoint"]}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = (mnt / "config" / "config.properties").read_text()
    assert "disable_token_authorization=true" in cfg and "enable_model_api=false" in cfg
    p_inf, p_man, p_met, p_gi, p_gm = free_ports(5)
    cfg = (
        cfg.replace("0.0.0.0:8080", f"127.0.0.1:{p_inf}")
        .replace("127.0.0.1:8081", f"127.0.0.1:{p_man}")
        .replace("0.0.0.0:8082", f"127.0.0.1:{p_met}")
        .replace("grpc_inference_port=7070", f"grpc_inference_port={p_gi}")
        .replace("grpc_management_port=7071", f"grpc_management_port={p_gm}")
        .replace("/mnt/models/model-store", str(mnt / "model-store"))
    )
    inst = start_torchserve(mnt / "model-store", {"cscl": "cscl.mar"}, workdir=tmp_path / "ts",
                            config_text=cfg, ready_timeout=240)  # fmt: skip
    try:
        body = (made["features"] / "case010_HE.h5").read_bytes()
        r = requests.post(f"{inst.inference_url}/predictions/cscl", data=body, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "0.1.0+test"
        d = inst.describe("cscl")[0]
        assert d["batchSize"] == 8 and d["modelVersion"] == "0.1.0+test"
    finally:
        inst.stop()
