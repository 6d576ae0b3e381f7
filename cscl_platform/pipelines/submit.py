"""Upload a compiled pipeline package to a Kubeflow Pipelines server and start a run.

A new pipeline name is created; an existing one gets a new version (named by the package's
version, see pipelines/compile.py), so every run points at the exact code it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cscl.errors import CsclError, InputError


@dataclass
class Submitted:
    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str
    run_url: str


def _client(host: str, namespace: str | None, token: str | None):
    import kfp

    try:
        return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)
    except Exception as exc:  # connection refused, TLS, auth: kfp raises many types
        raise CsclError(
            f"cannot reach the Kubeflow Pipelines API at {host}: {exc}",
            hint="check --host (e.g. http://localhost:8080 after `kubectl port-forward`) and "
            "the token (KFP_TOKEN)",
        ) from exc


def with_caching(package: str | Path, enabled: bool) -> Path:
    """A copy of `package` with caching forced on/off for every task, nested DAGs included.

    Why: a run that references an uploaded version cannot override caching (kfp.Client applies
    `enable_caching` only to packages sent inline), so the choice is baked into the version.
    """
    import yaml

    package = Path(package)
    docs = list(yaml.safe_load_all(package.read_text()))
    spec = docs[0]

    def walk(dag: dict) -> None:
        for task in (dag or {}).get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": bool(enabled)}

    walk(spec.get("root", {}).get("dag"))
    for comp in spec.get("components", {}).values():
        walk(comp.get("dag"))
    out = package.with_name(f"{package.stem}-{'cache' if enabled else 'nocache'}.yaml")
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return out


def submit(
    package: str | Path,
    host: str,
    *,
    pipeline_name: str,
    version_name: str,
    params: dict | None = None,
    experiment: str = "cscl",
    run_name: str | None = None,
    enable_caching: bool | None = None,
    namespace: str | None = None,
    token: str | None = None,
    service_account: str | None = None,
    description: str | None = None,
) -> Submitted:
    """Upload `package` as pipeline `pipeline_name` / version `version_name`; start a run.

    `enable_caching` None keeps the compiled per-task settings (ingest never caches).
    """
    package = Path(package)
    if not package.is_file():
        raise InputError(
            f"pipeline package {package} not found", hint="run `cscl pipeline compile`"
        )
    if enable_caching is not None:
        package = with_caching(package, enable_caching)
        version_name = f"{version_name}-{'cache' if enable_caching else 'nocache'}"
    client = _client(host, namespace, token)
    pid = client.get_pipeline_id(pipeline_name)
    if pid is None:
        p = client.upload_pipeline(
            str(package), pipeline_name=pipeline_name, description=description
        )
        pid = p.pipeline_id
        print(f"created pipeline {pipeline_name} ({pid})")
    v = client.upload_pipeline_version(
        str(package), pipeline_version_name=version_name, pipeline_id=pid, description=description
    )
    print(f"uploaded version {version_name} ({v.pipeline_version_id})")
    exp = client.create_experiment(name=experiment, namespace=namespace)
    run = client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name=run_name or f"{pipeline_name}-{version_name}",
        params=params or {},
        pipeline_id=pid,
        version_id=v.pipeline_version_id,
        service_account=service_account,
    )
    url = f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
    return Submitted(pid, v.pipeline_version_id, exp.experiment_id, run.run_id, url)
