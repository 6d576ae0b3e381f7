"""Start a retraining: a Kubeflow Pipelines run of the retraining pipeline, or a CI workflow
dispatch (GitHub Actions). No Kubeflow *pipeline* code here — `kfp.Client` is an HTTP client, the
same one `cscl pipeline submit` uses.

- kfp: `kfp.Client(host).run_pipeline(experiment_id, job_name, pipeline_id, version_id, params)`
  on the latest (or a named) version of the retraining pipeline, in experiment `experiment`.
  Token from `$KFP_TOKEN` (or the standard in-cluster / kube-config auth of kfp.Client).
- github: `POST {api}/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches` with
  `{"ref": ..., "inputs": {...}}` and `Authorization: Bearer $GITHUB_TOKEN` (never on the command
  line or in files). GitHub answers 204 (or 200 with run details).
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from typing import Any

from cscl.errors import InputError, StorageError


class TriggerError(StorageError):
    """The retraining could not be started (endpoint, auth, unknown pipeline/workflow)."""


@dataclass
class KfpTarget:
    host: str
    pipeline_name: str = "cscl-retraining"
    version_name: str | None = None  # None = the newest version
    experiment: str = "cscl-retraining"
    params: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    token_env: str = "KFP_TOKEN"


@dataclass
class GithubTarget:
    repo: str  # owner/name
    workflow: str = "retrain.yml"  # file name or numeric id
    ref: str = "main"
    inputs: dict[str, str] = field(default_factory=dict)
    token_env: str = "GITHUB_TOKEN"
    api_url: str = "https://api.github.com"


def trigger_kfp(target: KfpTarget, run_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Create one run of the retraining pipeline version; returns ids for the state/report."""
    import kfp

    token = os.environ.get(target.token_env) or None
    try:
        with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later"
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(
                host=target.host, existing_token=token, namespace=target.namespace or "kubeflow"
            )
        pipeline_id = client.get_pipeline_id(target.pipeline_name)
        if not pipeline_id:
            raise TriggerError(
                f"no pipeline named {target.pipeline_name!r} at {target.host}",
                hint="upload it first: cscl pipeline submit (or --kfp-pipeline NAME)",
            )
        flt = None
        if target.version_name:
            flt = json.dumps(
                {
                    "predicates": [
                        {
                            "operation": "EQUALS",
                            "key": "display_name",
                            "stringValue": target.version_name,
                        }
                    ]
                }
            )
        versions = client.list_pipeline_versions(
            pipeline_id, page_size=1, sort_by="created_at desc", filter=flt
        ).pipeline_versions
        if not versions:
            raise TriggerError(
                f"pipeline {target.pipeline_name!r} has no version"
                + (f" named {target.version_name!r}" if target.version_name else ""),
                hint="upload a version with cscl pipeline submit",
            )
        version = versions[0]
        experiment = client.create_experiment(target.experiment, namespace=target.namespace)
        run = client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name=run_name,
            pipeline_id=pipeline_id,
            version_id=version.pipeline_version_id,
            params={**params, **target.params},  # the user's --kfp-param wins
        )
    except TriggerError:
        raise
    except Exception as exc:  # ApiException, connection errors, ValueError from kfp
        raise TriggerError(
            f"Kubeflow Pipelines at {target.host} refused the retraining run: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            hint=f"check --kfp-host, the pipeline name and ${target.token_env}",
        ) from exc
    return {
        "run_id": run.run_id,
        "pipeline_id": pipeline_id,
        "version_id": version.pipeline_version_id,
        "version_name": version.display_name,
        "experiment_id": experiment.experiment_id,
        "host": target.host,
    }


def trigger_github(target: GithubTarget, inputs: dict[str, str]) -> dict[str, Any]:
    """Dispatch the CI retraining workflow; returns what GitHub said."""
    token = os.environ.get(target.token_env)
    if not token:
        raise InputError(
            f"${target.token_env} is not set",
            hint="export a token allowed to dispatch workflows (actions: write) in the environment",
        )
    if target.repo.count("/") != 1:
        raise InputError(f"--github-repo {target.repo!r} must be owner/name")
    url = (
        f"{target.api_url.rstrip('/')}/repos/{target.repo}/actions/workflows/"
        f"{target.workflow}/dispatches"
    )
    body = {"ref": target.ref, "inputs": {**target.inputs, **inputs}}
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "Content-Type": "application/json",
            "User-Agent": "cscl-monitoring",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status = resp.status
            text = resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        msg = exc.read().decode(errors="replace")[:300]
        raise TriggerError(
            f"GitHub refused the workflow dispatch {url}: HTTP {exc.code} {msg}",
            hint="check --github-repo/--github-workflow, the ref, the workflow's inputs and the "
            f"token in ${target.token_env}",
        ) from exc
    except urllib.error.URLError as exc:
        raise TriggerError(f"cannot reach {url}: {exc.reason}") from exc
    out: dict[str, Any] = {"status": status, "url": url, "ref": target.ref}
    if text.strip():
        with contextlib.suppress(json.JSONDecodeError):
            out["response"] = json.loads(text)
    return out
