"""deploy component: KServe rendering (validated shape), TorchServe registration errors."""

from __future__ import annotations

import pytest
import yaml
from kfp import dsl

from components.conftest import art
from components.deploy.component import deploy
from components.deploy.logic import register_torchserve, render_inference_service
from cscl.errors import CsclError, InputError


def test_interface():
    spec = deploy.component_spec
    assert spec.outputs["deployment"].type == "system.Markdown@0.0.1"
    assert spec.inputs["target"].default == "none"


def test_render_uses_the_serving_manifest():
    from components.deploy.logic import load_template

    tpl = load_template()
    assert tpl is not None, "manifests/base/serving/kserve/inferenceservice.yaml is the template"
    isvc = render_inference_service("s3://b/p/models/m/2.0/", "m", "prod")
    assert isvc["metadata"]["name"] == "m" and isvc["metadata"]["namespace"] == "prod"
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://b/p/models/m/2.0/serving"
    assert model["runtime"] == tpl["spec"]["predictor"]["model"]["runtime"]  # rest kept as is
    assert tpl["spec"]["predictor"]["model"]["storageUri"] != model["storageUri"]  # not mutated


def test_render_inference_service():
    isvc = render_inference_service(
        "s3://b/p/models/cscl/1.0/", "cscl", "ns", gpu=True, template={}
    )
    assert isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://b/p/models/cscl/1.0/serving"
    assert model["modelFormat"]["name"] == "pytorch"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "cscl-serving"


def test_target_none_records_the_service(tmp_path):
    md = art(dsl.Markdown, tmp_path / "d.md")
    done = deploy.python_func(model_uri="s3://b/m/cscl/1/", deployment=md)
    assert "not deployed" in done
    text = (tmp_path / "d.md").read_text()
    doc = yaml.safe_load(text.split("```yaml\n")[1].split("```")[0])
    assert doc["metadata"]["name"] == "cscl"


def test_bad_target_and_unreachable_torchserve(tmp_path):
    md = art(dsl.Markdown, tmp_path / "d.md")
    with pytest.raises(InputError, match="unknown deploy target"):
        deploy.python_func(model_uri="s3://b/m/", deployment=md, target="k8s")
    with pytest.raises(InputError, match="torchserve_management_url"):
        deploy.python_func(model_uri="s3://b/m/", deployment=md, target="torchserve")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    release = tmp_path / "rel"
    release.mkdir()
    (release / "model.mar").write_bytes(b"PK")
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(CsclError, match="cannot reach the TorchServe management API"):
        register_torchserve(str(release), "cscl", f"http://127.0.0.1:{port}", store, timeout=5)
    assert (store / "cscl-rel.mar").exists()  # the archive was staged before the call
