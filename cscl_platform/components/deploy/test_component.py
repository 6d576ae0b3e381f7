"""deploy component: KServe rendering (validated shape), TorchServe registration errors."""

from __future__ import annotations

import pytest
import yaml
from kfp import dsl

from cscl.errors import CsclError, InputError
from cscl_platform.components.conftest import art
from cscl_platform.components.deploy.component import deploy
from cscl_platform.components.deploy.logic import register_torchserve, render_inference_service


def test_interface():
    spec = deploy.component_spec
    assert spec.outputs["deployment"].type == "system.Markdown@0.0.1"
    assert spec.inputs["target"].default == "none"


def test_render_uses_the_serving_manifest():
    from cscl_platform.components.deploy.logic import load_template

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


@pytest.mark.slow
@pytest.mark.torchserve
def test_register_with_a_real_torchserve(
    model_art, embeddings_art, features_art, index_art, eval_results_art, cohort, tmp_path
):
    """package → deploy(target=torchserve) against a real TorchServe (model API enabled)."""
    import json
    import shutil
    import urllib.request

    from cscl_platform.components.package.component import package

    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17")
    from cscl_platform.serving.server import start_torchserve

    uri = package.python_func(
        model=model_art, embeddings=embeddings_art, features=features_art,
        slide_index=index_art, eval_results=eval_results_art,
        project_prefix=str(tmp_path / "store"), bundle=art(dsl.Model, tmp_path / "bundle"),
        model_card=art(dsl.Markdown, tmp_path / "card.md"), labels_uri=cohort.labels,
        tasks=cohort.tasks, model_version="9.9.9",
    )  # fmt: skip
    store = tmp_path / "model-store"
    store.mkdir()
    ts = start_torchserve(store, models={}, extra_config={"enable_model_api": "true"})
    try:
        key = ts.keys().get("management")
        md = art(dsl.Markdown, tmp_path / "deploy.md")
        done = deploy.python_func(
            model_uri=uri, deployment=md, target="torchserve",
            torchserve_management_url=ts.management_url, torchserve_model_store=str(store),
            torchserve_token=key or "",
        )  # fmt: skip
        assert "registered with TorchServe" in done
        req = urllib.request.Request(f"{ts.management_url}/models/cscl")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            desc = json.loads(resp.read())
        assert desc[0]["modelName"] == "cscl" and desc[0]["workers"]
        assert (store / "cscl-9.9.9.mar").is_file()
    finally:
        ts.stop()
