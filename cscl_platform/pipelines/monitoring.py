"""The monitoring pipeline: one `monitor_drift` task, scheduled as a recurring run.

Reads a model version's inference logs, compares them with the reference set stored with that
version, shows the Evidently report (`HTML`) and drift figures (`Metrics`), and — when drift
passes the policy — starts the retraining pipeline (`kfp.Client`) or dispatches the CI retraining
workflow; the task's outputs say which and why. Caching is off: every scheduled run must read the
logs again. `create_recurring_run` uploads this pipeline as a version and schedules it.
"""

import os
from pathlib import Path

from kfp import dsl

from cscl_platform.components.monitor_drift.component import monitor_drift
from cscl_platform.pipelines.compile import compile_pipeline, pipeline_version
from cscl_platform.pipelines.training import on_cluster

PIPELINE_NAME = "cscl-monitoring"
# Optional Secret with the tokens the trigger needs (KFP_TOKEN for a multi-user Kubeflow,
# GITHUB_TOKEN for workflow dispatch); see manifests/base/monitoring.
TRIGGER_SECRET = "cscl-retrain-credentials"


def build_monitoring_pipeline(cluster: bool = False):
    """The pipeline; `cluster=True` adds the S3 and trigger Secrets (kfp-kubernetes)."""
    from kfp import kubernetes

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Drift of a model version's inference logs vs its reference set (Evidently); "
        "starts retraining when the drift policy says so.",
    )
    def monitoring(
        model_version: str,
        logs_uri: str,
        reference_uri: str,
        since: str = "",
        until: str = "",
        window_days: int = 7,
        policy_uri: str = "",
        trigger: str = "none",
        kfp_host: str = "",
        retraining_pipeline: str = "cscl-retraining",
        retraining_params_json: str = "{}",
        github_repo: str = "",
        github_workflow: str = "retrain.yml",
        s3_endpoint: str = "",
    ) -> str:
        task = monitor_drift(
            model_version=model_version,
            logs_uri=logs_uri,
            reference_uri=reference_uri,
            since=since,
            until=until,
            window_days=window_days,
            policy_uri=policy_uri,
            trigger=trigger,
            kfp_host=kfp_host,
            kfp_pipeline=retraining_pipeline,
            kfp_params_json=retraining_params_json,
            github_repo=github_repo,
            github_workflow=github_workflow,
            s3_endpoint=s3_endpoint,
        )
        task.set_display_name("drift report + retraining decision")
        task.set_caching_options(False)
        task.set_cpu_limit("2").set_memory_limit("4G")
        if cluster:
            on_cluster(task)
            kubernetes.use_secret_as_env(
                task,
                secret_name=TRIGGER_SECRET,
                secret_key_to_env={"GITHUB_TOKEN": "GITHUB_TOKEN", "KFP_TOKEN": "KFP_TOKEN"},
                optional=True,
            )
        return task.outputs["verdict"]

    return monitoring


def create_recurring_run(
    host: str,
    params: dict,
    *,
    cron: str = "0 0 6 * * *",
    job_name: str = "cscl-drift-daily",
    experiment: str = "cscl-monitoring",
    package: "str | Path | None" = None,
    version_name: "str | None" = None,
    namespace: "str | None" = None,
    token: "str | None" = None,
) -> dict:
    """Upload this pipeline (new pipeline or new version) and schedule it with `cron`.

    `cron` uses KFP's 6-field format (seconds first): the default runs daily at 06:00 UTC over the
    last `window_days` complete days. `max_concurrency=1` and `no_catchup=True`: a backlog does
    not start a burst of runs (each window is still idempotent, see cscl.monitoring.state).
    Returns the ids (pipeline, version, experiment, recurring run).
    """
    import kfp

    version_name = version_name or pipeline_version()
    if package is None:
        package = compile_pipeline("monitoring", "dist/pipelines", version=version_name)
    token = token or os.environ.get("KFP_TOKEN") or None
    client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)
    pid = client.get_pipeline_id(PIPELINE_NAME)
    if pid is None:
        pid = client.upload_pipeline(str(package), pipeline_name=PIPELINE_NAME).pipeline_id
    version = client.upload_pipeline_version(
        str(package), pipeline_version_name=version_name, pipeline_id=pid
    )
    exp = client.create_experiment(experiment, namespace=namespace)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=job_name,
        description="cscl drift monitoring (pipelines/monitoring.py)",
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_id=pid,
        version_id=version.pipeline_version_id,
        enable_caching=False,
    )
    return {
        "pipeline_id": pid,
        "version_id": version.pipeline_version_id,
        "experiment_id": exp.experiment_id,
        "recurring_run_id": job.recurring_run_id,
    }
