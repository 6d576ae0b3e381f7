"""Deployment actions behind the deploy component (plain Python, no Kubeflow imports).

Two targets: a TorchServe management API (local/on-prem: the .mar is copied into the server's
model store and registered by file name, because the server only loads from its store), or a
KServe InferenceService (cluster: rendered from the model URI and applied with the Kubernetes
API from inside the cluster).
"""

from __future__ import annotations

import copy
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from cscl.errors import CsclError, InputError
from cscl.io import storage

KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# The serving owner's InferenceService (manifests/base/serving/kserve); the image carries a copy.
TEMPLATE_ENV = "CSCL_ISVC_TEMPLATE"
REPO_TEMPLATE = (
    Path(__file__).resolve().parents[3]
    / "manifests" / "base" / "serving" / "kserve" / "inferenceservice.yaml"
)  # fmt: skip


def load_template() -> dict | None:
    """The committed InferenceService (env CSCL_ISVC_TEMPLATE, else the repository copy)."""
    path = Path(os.environ.get(TEMPLATE_ENV) or REPO_TEMPLATE)
    if not path.is_file():
        return None
    doc = yaml.safe_load(path.read_text())
    return doc if isinstance(doc, dict) and doc.get("kind") == "InferenceService" else None


def register_torchserve(
    model_uri: str,
    model_name: str,
    management_url: str,
    model_store: str | Path,
    *,
    token: str | None = None,
    workers: int = 1,
    timeout: float = 600.0,
) -> dict:
    """Copy `<model_uri>/model.mar` into the store as `<name>-<version>.mar`, register it and
    make it the default version. Returns TorchServe's description of the model."""
    version = model_uri.rstrip("/").rsplit("/", 1)[-1]
    store = Path(model_store)
    if not store.is_dir():
        raise InputError(f"TorchServe model store {store} does not exist")
    mar = f"{model_name}-{version}.mar"
    storage.download(f"{model_uri.rstrip('/')}/model.mar", store / mar)
    q = urllib.parse.urlencode(
        {"url": mar, "model_name": model_name, "initial_workers": workers, "synchronous": "true"}
    )
    base = management_url.rstrip("/")
    _call("POST", f"{base}/models?{q}", token, timeout)
    # The archive's own version string decides the URL; ask TorchServe which one it registered.
    desc = _call("GET", f"{base}/models/{model_name}/all", token, timeout)
    versions = [d.get("modelVersion") for d in desc] if isinstance(desc, list) else []
    if versions:
        newest = versions[-1]
        _call("PUT", f"{base}/models/{model_name}/{newest}/set-default", token, timeout)
    return {"model_name": model_name, "versions": versions, "mar": str(store / mar)}


def _call(method: str, url: str, token: str | None, timeout: float):
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read().decode() or "{}"
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise CsclError(
            f"TorchServe management API {method} {url.split('?')[0]} → HTTP {exc.code}: {detail}",
            hint="is enable_model_api=true on that server, and the management token right?",
        ) from exc
    except urllib.error.URLError as exc:
        raise CsclError(
            f"cannot reach the TorchServe management API at {url.split('?')[0]}: {exc.reason}",
            hint="check torchserve_management_url",
        ) from exc
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return {"message": body}


def render_inference_service(
    model_uri: str,
    model_name: str,
    namespace: str = "cscl",
    service_account: str = "cscl-serving",
    gpu: bool = False,
    template: dict | None = None,
) -> dict:
    """KServe InferenceService (TorchServe) reading `<model_uri>serving/` from S3.

    Starts from the serving manifests' InferenceService (`load_template()`) so the pipeline
    deploys exactly what manifests/base/serving describes, with name, namespace and storageUri
    set for this model; a minimal built-in spec is used when no template is available.
    """
    template = template if template is not None else load_template()
    isvc = copy.deepcopy(template) if template else {
        "apiVersion": f"{KSERVE_GROUP}/{KSERVE_VERSION}",
        "kind": "InferenceService",
        "metadata": {},
        "spec": {"predictor": {"serviceAccountName": service_account, "model": {
            "modelFormat": {"name": "pytorch"}, "protocolVersion": "v2",
            "resources": {"requests": {"cpu": "1", "memory": "4Gi"},
                          "limits": {"cpu": "2", "memory": "8Gi"}}}}},
    }  # fmt: skip
    md = isvc.setdefault("metadata", {})
    md["name"], md["namespace"] = model_name, namespace
    md.setdefault("annotations", {})["cscl.io/model-uri"] = model_uri
    model = isvc["spec"]["predictor"]["model"]
    model["storageUri"] = f"{model_uri.rstrip('/')}/serving"
    if gpu:
        limits = model.setdefault("resources", {}).setdefault("limits", {})
        limits["nvidia.com/gpu"] = "1"
    return isvc


def apply_inference_service(isvc: dict) -> str:
    """Create or replace the InferenceService with the in-cluster Kubernetes API."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    if os.environ.get("KUBECONFIG"):  # the deployer's own credentials (pipelines/training.py)
        config.load_kube_config()
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    api = client.CustomObjectsApi()
    md = isvc["metadata"]
    args = (KSERVE_GROUP, KSERVE_VERSION, md["namespace"], KSERVE_PLURAL)
    try:
        api.create_namespaced_custom_object(*args, body=isvc)
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise CsclError(f"cannot create InferenceService {md['name']}: {exc.reason}") from exc
    current = api.get_namespaced_custom_object(*args, md["name"])
    isvc = {**isvc, "metadata": {**md, "resourceVersion": current["metadata"]["resourceVersion"]}}
    api.replace_namespaced_custom_object(*args, md["name"], body=isvc)
    return "replaced"


def to_yaml(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False)
