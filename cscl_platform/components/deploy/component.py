"""deploy: register the packaged model with TorchServe (local) or apply a KServe
InferenceService (cluster)."""

from kfp.dsl import Markdown, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def deploy(
    model_uri: str,
    deployment: Output[Markdown],
    model_name: str = "cscl",
    target: str = "none",
    torchserve_management_url: str = "",
    torchserve_model_store: str = "",
    torchserve_token: str = "",
    namespace: str = "cscl",
    gpu: bool = False,
    s3_endpoint: str = "",
) -> str:
    """target: none (record only) | torchserve | kserve. Returns what was done."""
    from cscl.errors import InputError
    from cscl.io import storage
    from cscl_platform.components.deploy.logic import (
        apply_inference_service,
        register_torchserve,
        render_inference_service,
        to_yaml,
    )

    storage.configure_store(s3_endpoint or None)
    isvc = render_inference_service(model_uri, model_name, namespace, gpu=gpu)
    if target == "torchserve":
        if not torchserve_management_url or not torchserve_model_store:
            raise InputError("target torchserve needs torchserve_management_url and _model_store")
        info = register_torchserve(
            model_uri,
            model_name,
            torchserve_management_url,
            torchserve_model_store,
            token=torchserve_token or None,
        )
        done = f"registered with TorchServe at {torchserve_management_url}: {info['versions']}"
    elif target == "kserve":
        done = f"InferenceService {namespace}/{model_name} {apply_inference_service(isvc)}"
    elif target == "none":
        done = "not deployed (target none); the InferenceService below is what kserve would apply"
    else:
        raise InputError(f"unknown deploy target {target!r}", hint="none | torchserve | kserve")
    with open(deployment.path, "w") as f:
        f.write(f"# Deployment of {model_name}\n\n- model: `{model_uri}`\n- {done}\n\n")
        f.write(f"```yaml\n{to_yaml(isvc)}```\n")
    print(done)
    return done
