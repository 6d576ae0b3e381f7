"""Offline checks of manifests/: every kustomization builds, core kinds pass strict schema
validation (kubernetes-validate), and the S3 Secret is a template without values."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
TARGETS = ["base", "overlays/local", "overlays/cluster"]
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
    assert {"Namespace", "ServiceAccount", "Secret", "Role", "RoleBinding"} <= kinds
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


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_s3_secret_is_a_template_without_values(target):
    from cscl_platform.components.common import S3_SECRET_KEYS, S3_SECRET_NAME

    [secret] = [d for d in build(target) if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == S3_SECRET_NAME  # what the pipelines mount
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert set(S3_SECRET_KEYS) <= set(values)
    assert values["AWS_ACCESS_KEY_ID"] == "" and values["AWS_SECRET_ACCESS_KEY"] == ""


def test_invalid_manifest_is_rejected():
    """The validator is not a rubber stamp: an unknown field fails strict validation."""
    import kubernetes_validate

    bad = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.33.0", strict=True)
