"""`cscl monitor`: drift report of a model version's inference logs vs its reference set."""

from __future__ import annotations

import argparse

from cscl.errors import InputError

HELP = "drift report (Evidently) of a model version's inference logs; optionally start retraining"

# Cohort config key (cscl/config.py) → option it fills (`cscl --config FILE monitor`).
CONFIG = {"quiet": "quiet"}


def _kv(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InputError(f"{flag} {item!r} is not KEY=VALUE")
        out[k] = v
    return out


def _today() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).date().isoformat()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-version", required=True, help="model version whose logs to check")
    p.add_argument("--since", help="first day of the window (YYYY-MM-DD or today, UTC)")
    p.add_argument("--until", help="last day of the window, inclusive (default: today UTC)")
    p.add_argument(
        "--window-days",
        type=int,
        help="instead of --since: the last N complete days (until = yesterday); for schedules",
    )
    p.add_argument(
        "--logs",
        required=True,
        help="project prefix holding inference-logs/date=…/ (s3://bucket/prefix or a local dir)",
    )
    p.add_argument(
        "--reference",
        required=True,
        help="reference.parquet, the model bundle dir, or s3://…/models/<name>/<version>/",
    )
    p.add_argument("--policy", help="drift policy YAML (default: built-in = policies/drift.yaml)")
    p.add_argument(
        "--out", help="report folder (default: <prefix>/monitoring/<version>_<since>_<until>)"
    )
    p.add_argument(
        "--labels", help="labels that arrived later (CSV/Parquet: request_id|slide_id + tasks)"
    )
    p.add_argument("--state", help="idempotency state root (default: <prefix>/monitoring/state)")
    p.add_argument("--quiet", action="store_true", help="no progress (bar, or log lines)")
    p.add_argument(
        "--trigger",
        choices=["none", "kfp", "github"],
        default="none",
        help="what to start when drift passes the policy: a KFP retraining run or a workflow",
    )
    p.add_argument("--force-trigger", action="store_true", help="re-arm this window's trigger")
    g = p.add_argument_group("--trigger kfp (token: $KFP_TOKEN)")
    g.add_argument("--kfp-host", help="Kubeflow Pipelines API URL")
    g.add_argument("--kfp-pipeline", default="cscl-retraining", help="retraining pipeline name")
    g.add_argument("--kfp-version", help="pipeline version name (default: newest)")
    g.add_argument("--kfp-experiment", default="cscl-retraining", help="experiment of the run")
    g.add_argument("--kfp-namespace", help="Kubeflow profile namespace (multi-user)")
    g.add_argument("--kfp-param", action="append", metavar="KEY=VALUE", help="run parameter")
    g = p.add_argument_group("--trigger github (token: $GITHUB_TOKEN)")
    g.add_argument("--github-repo", help="owner/name")
    g.add_argument("--github-workflow", default="retrain.yml", help="workflow file name or id")
    g.add_argument("--github-ref", default="main", help="branch or tag the workflow runs on")
    g.add_argument("--github-api", default="https://api.github.com", help="GitHub API URL")
    g.add_argument(
        "--github-input", action="append", metavar="KEY=VALUE", help="workflow input (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    from cscl_platform.monitoring.retraining import TriggerConfig
    from cscl_platform.monitoring.run import run_monitoring
    from cscl_platform.monitoring.trigger import GithubTarget, KfpTarget

    trig = TriggerConfig(mode=args.trigger, force=args.force_trigger)
    if args.kfp_host:
        trig.kfp = KfpTarget(
            host=args.kfp_host,
            pipeline_name=args.kfp_pipeline,
            version_name=args.kfp_version,
            experiment=args.kfp_experiment,
            namespace=args.kfp_namespace,
            params=_kv(args.kfp_param, "--kfp-param"),
        )
    if args.github_repo:
        trig.github = GithubTarget(
            repo=args.github_repo,
            workflow=args.github_workflow,
            ref=args.github_ref,
            api_url=args.github_api,
            inputs=_kv(args.github_input, "--github-input"),
        )
    res = run_monitoring(
        model_version=args.model_version,
        logs=args.logs,
        reference=args.reference,
        since=_today() if args.since == "today" else args.since,
        until=args.until,
        window_days=args.window_days,
        policy=args.policy or None,  # '' from a manifest's empty variable = default
        out=args.out or None,
        labels=args.labels or None,
        trigger=trig,
        state_root=args.state or None,
        progress=not args.quiet,
    )
    rec = res.drift["records"]
    print(
        f"model {args.model_version}, window {res.drift['window']['since']}.."
        f"{res.drift['window']['until']}: {rec['used']} records used of {rec['files']}"
        + (f", skipped {rec['skipped']}" if rec["skipped"] else "")
    )
    print(res.summary())
    return 1 if res.action.get("action") == "failed" else 0
