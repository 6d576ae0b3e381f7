"""Kubeflow pipelines of cscl (compose the components in `components/`).

`PIPELINES` maps a short name to a builder `build(cluster: bool) -> pipeline`; `cluster=True`
adds Kubernetes-only settings (GPU, node placement, S3 Secret), `False` is what kfp.local runs.
"""

from __future__ import annotations

import importlib
import importlib.util

from cscl.errors import InputError

# name → "module:builder". Builders are imported lazily: compiling one pipeline must not need
# the others' dependencies.
PIPELINES: dict[str, str] = {
    "training": "cscl_platform.pipelines.training:build_training_pipeline",
    "retraining": "cscl_platform.pipelines.training:build_retraining_pipeline",
    "monitoring": "cscl_platform.pipelines.monitoring:build_monitoring_pipeline",
}


def available() -> list[str]:
    """Pipeline names whose module exists in this checkout."""
    out = []
    for name, target in PIPELINES.items():
        mod = target.split(":")[0]
        if importlib.util.find_spec(mod) is not None:
            out.append(name)
    return out


def build(name: str, cluster: bool = False):
    """The pipeline object of `name` (see `PIPELINES`)."""
    if name not in PIPELINES:
        raise InputError(f"unknown pipeline {name!r}", hint=f"choose one of {sorted(PIPELINES)}")
    mod_name, attr = PIPELINES[name].split(":")
    mod = importlib.import_module(mod_name)
    builder = getattr(mod, attr, None)
    if builder is None:
        raise InputError(f"{mod_name} has no {attr}()")
    return builder(cluster=cluster)
