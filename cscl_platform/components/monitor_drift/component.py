"""monitor_drift: inference logs of a model version vs its reference set → Evidently `HTML`
report + drift `Metrics` + drift.json, and (per policy) one retraining run or CI dispatch.

A thin wrapper over `cscl_platform.monitoring.run.run_monitoring` (tested in tests/monitoring),
the function `cscl monitor` calls.
"""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Metrics, Output

from cscl_platform.components.common import cscl_component


@cscl_component
def monitor_drift(
    model_version: str,
    logs_uri: str,
    reference_uri: str,
    report: Output[HTML],
    metrics: Output[Metrics],
    drift_json: Output[Artifact],
    since: str = "",
    until: str = "",
    window_days: int = 7,
    policy_uri: str = "",
    out_uri: str = "",
    trigger: str = "none",
    kfp_host: str = "",
    kfp_pipeline: str = "cscl-retraining",
    kfp_experiment: str = "cscl-retraining",
    kfp_params_json: str = "{}",
    github_repo: str = "",
    github_workflow: str = "retrain.yml",
    github_ref: str = "main",
    github_api: str = "https://api.github.com",
    s3_endpoint: str = "",
) -> NamedTuple("MonitorOutputs", [("verdict", str), ("action", str), ("reason", str)]):
    """One monitoring run; returns the verdict, what was done about retraining, and why.

    Window: `since`/`until`, or (empty `since`) the last `window_days` complete days — what a
    recurring run wants. `trigger`: none | kfp | github (token from $KFP_TOKEN / $GITHUB_TOKEN).
    """
    import json
    from collections import namedtuple

    from cscl.io import storage
    from cscl_platform.monitoring.retraining import TriggerConfig
    from cscl_platform.monitoring.run import drift_metrics, run_monitoring
    from cscl_platform.monitoring.trigger import GithubTarget, KfpTarget

    storage.configure_store(s3_endpoint or None)
    trig = TriggerConfig(mode=trigger)
    if kfp_host:
        trig.kfp = KfpTarget(
            host=kfp_host,
            pipeline_name=kfp_pipeline,
            experiment=kfp_experiment,
            params=json.loads(kfp_params_json or "{}"),
        )
    if github_repo:
        trig.github = GithubTarget(
            repo=github_repo, workflow=github_workflow, ref=github_ref, api_url=github_api
        )
    res = run_monitoring(
        model_version=model_version,
        logs=logs_uri,
        reference=reference_uri,
        since=since or None,
        until=until or None,
        window_days=window_days,
        policy=policy_uri or None,
        out=out_uri or None,
        trigger=trig,
    )
    storage.download(f"{res.report_uri}/drift.html", report.path, verify=False)
    with open(drift_json.path, "w") as f:
        json.dump(res.drift, f, indent=2)
    for k, v in drift_metrics(res.drift).items():
        metrics.log_metric(k, v)
    report.metadata["verdict"] = res.verdict
    drift_json.metadata["verdict"] = res.verdict
    print(res.summary())
    out = namedtuple("MonitorOutputs", ["verdict", "action", "reason"])
    return out(res.verdict, str(res.action.get("action")), str(res.action.get("reason")))
