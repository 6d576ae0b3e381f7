"""Offline checks of manifests/: every kustomization builds, core kinds pass strict schema
validation (kubernetes-validate), and the security promises of docs/SECURITY.md hold in what
`kubectl apply -k` would send: no Secret rendered from the tree, no API token in any pod, API
rights only for the deployer, a NetworkPolicy that names the pods it admits, and images pinned
by digest in the cluster overlay."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
TARGETS = ["base", "overlays/local", "overlays/cluster"]
ALL_TARGETS = [*TARGETS, "base/serving/deployment"]
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed (CI installs it; `kubectl kustomize` is offline)"
)


def build(target: str) -> list[dict]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(MANIFESTS / target)], capture_output=True, text=True
    )
    assert out.returncode == 0, f"kubectl kustomize {target} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_builds_and_core_kinds_validate(target):
    import kubernetes_validate
    from kubernetes_validate import SchemaNotFoundError

    docs = build(target)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"} <= kinds
    assert {"InferenceService", "CronJob"} <= kinds  # serving/ and monitoring/ folded in
    validated = 0
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, "1.33.0", strict=True)
            validated += 1
        except SchemaNotFoundError:  # custom resources (KServe): no bundled schema
            assert "." in doc["apiVersion"].split("/")[0], f"core kind without schema: {doc}"
    assert validated >= 6
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert len(namespaces) == 1, f"resources spread over namespaces {namespaces}"


@needs_kubectl
def test_overlays_set_their_namespace_everywhere():
    docs = build("overlays/local")
    ns = next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
    assert ns == "cscl-dev"
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "cscl-dev"


def _pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload: Deployment, CronJob, InferenceService predictor."""
    out = []
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "Deployment":
            out.append((d["metadata"]["name"], spec["template"]["spec"]))
        elif d["kind"] == "CronJob":
            out.append((d["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]))
        elif d["kind"] == "InferenceService":
            out.append((d["metadata"]["name"], spec["predictor"]))
    return out


def _images(pod: dict) -> list[str]:
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    if "model" in pod:
        containers.append(pod["model"])
    return [c["image"] for c in containers if "image" in c]


@needs_kubectl
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_no_target_renders_a_secret(target):
    """`kubectl apply -k` must never overwrite the operator's real Secrets with values from the
    tree; the Secrets the workloads read are referenced by the names the pipelines mount."""
    from cscl_platform.components.common import S3_SECRET_KEYS, S3_SECRET_NAME

    docs = build(target)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == []
    refs = {(ref["name"], ref["key"]) for _, pod in _pod_specs(docs)
            for c in pod.get("containers", []) + pod.get("initContainers", []) + [pod.get("model", {})]
            for e in c.get("env", []) if (ref := e.get("valueFrom", {}).get("secretKeyRef"))}  # fmt: skip
    s3_keys = {key for name, key in refs if name == S3_SECRET_NAME}
    assert s3_keys and s3_keys <= set(S3_SECRET_KEYS)
    example = yaml.safe_load(
        (MANIFESTS / "base/platform/s3-credentials-secret.example.yaml").read_text()
    )
    assert example["metadata"]["name"] == S3_SECRET_NAME
    assert not any(example["stringData"][k] for k in S3_SECRET_KEYS)  # fmt: skip


@needs_kubectl
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_no_pod_gets_an_api_token_and_only_the_deployer_has_rights(target):
    docs = build(target)
    for d in docs:
        if d["kind"] == "ServiceAccount":
            assert d.get("automountServiceAccountToken") is False, d["metadata"]["name"]
    for name, pod in _pod_specs(docs):
        if "model" not in pod:  # KServe predictors: the service account decides (no token)
            assert pod.get("automountServiceAccountToken") is False, name
    for b in (d for d in docs if d["kind"] == "RoleBinding"):
        assert [s["name"] for s in b["subjects"]] == ["cscl-deployer"]
    for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "delete" not in rule["verbs"]
            assert rule["resources"] == ["inferenceservices"]


@needs_kubectl
@pytest.mark.parametrize("target", ["base", "base/serving/deployment"])
def test_network_policy_admits_named_pods_only(target):
    """No rule admits a whole namespace: every namespace selector comes with a pod selector."""
    [policy] = [d for d in build(target) if d["kind"] == "NetworkPolicy"]
    peers = [p for rule in policy["spec"]["ingress"] for p in rule["from"]]
    assert peers
    for peer in peers:
        assert peer.get("podSelector", {}).get("matchLabels"), peer
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert 8081 not in ports and 7070 not in ports and 7071 not in ports  # management, gRPC


@needs_kubectl
def test_cluster_overlay_pins_images_by_digest():
    images = [i for _, pod in _pod_specs(build("overlays/cluster")) for i in _images(pod)]
    assert len(images) >= 2
    for image in images:
        assert "@sha256:" in image and ":0.1.0" not in image, image
    assert any(
        ":" in i.rsplit("/", 1)[-1] for _, p in _pod_specs(build("base")) for i in _images(p)
    )


def test_invalid_manifest_is_rejected():
    """The validator is not a rubber stamp: an unknown field fails strict validation."""
    import kubernetes_validate

    bad = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.33.0", strict=True)
