"""`cscl pipeline compile|submit|run-local`: versioned Kubeflow pipeline packages and runs."""

from __future__ import annotations

import argparse

HELP = "compile, submit (to a Kubeflow Pipelines server) or run locally the cscl pipelines"

# `--config cohort.yaml` (cscl/config.py) fills the pipeline parameters of the same names
# (pipelines/params.py), under --params-file and --param; see parse_params.


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = sub.add_parser("compile", help="write dist/pipelines/<name>-<version>.yaml")
    c.add_argument("--name", default="all", help="training | retraining | monitoring | all")
    c.add_argument("--out", default="dist/pipelines", help="output folder")
    c.add_argument(
        "--local", action="store_true", help="leave out cluster-only settings (GPU, Secret)"
    )
    c.add_argument("--version", help="override <package version>-<git commit>")

    s = sub.add_parser("submit", help="upload a new pipeline version and start a run")
    s.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
    s.add_argument("--name", default="training", help="pipeline (training | retraining | …)")
    s.add_argument("--package", help="compiled package (default: compile now)")
    s.add_argument("--experiment", default="cscl", help="experiment name (created if missing)")
    s.add_argument("--run-name", help="run name (default <pipeline>-<version>)")
    cache = s.add_mutually_exclusive_group()
    cache.add_argument("--caching", dest="caching", action="store_true", default=None,
                       help="force caching on for every task")  # fmt: skip
    cache.add_argument("--no-caching", dest="caching", action="store_false",
                       help="force caching off for every task")  # fmt: skip
    s.add_argument("--namespace", help="Kubeflow profile namespace (multi-user)")
    s.add_argument("--token-env", default="KFP_TOKEN", help="env var holding a bearer token")
    s.add_argument("--service-account", help="Kubernetes service account of the run")
    _param_args(s)

    r = sub.add_parser("run-local", help="run a pipeline here with kfp.local (no cluster)")
    r.add_argument("--name", default="training", help="pipeline (training | retraining | …)")
    r.add_argument("--pipeline-root", default="runs/kfp", help="where artifacts go")
    _param_args(r)


def _param_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline parameter (repeatable)")  # fmt: skip
    p.add_argument(
        "--params-file",
        help="YAML/JSON mapping of pipeline parameters (over the --config file's keys of the "
        "same names; --param wins over both)",
    )
    p.add_argument("--s3-endpoint", help="shorthand for --param s3_endpoint=URL")


def parse_params(
    pipeline, pairs: list[str], params_file: str | None = None, cohort_config=None
) -> dict:
    """KEY=VALUE strings (+ a YAML/JSON file, + a cohort config) → values typed by the pipeline's
    declared inputs. Precedence: --param, then --params-file, then the cohort config's keys."""
    import sys

    import yaml

    from cscl.errors import InputError
    from cscl_platform.pipelines.params import from_cohort_config

    inputs = pipeline.component_spec.inputs or {}
    raw: dict = {}
    if cohort_config is not None:
        mapped, local_only = from_cohort_config(cohort_config.stated())
        raw.update({k: v for k, v in mapped.items() if k in inputs})
        skipped = local_only + sorted(set(mapped) - set(inputs))
        if skipped:
            print(f"{cohort_config.source}: not parameters of pipeline {pipeline.name}, left out: "
                  f"{', '.join(skipped)}", file=sys.stderr)  # fmt: skip
    if params_file:
        with open(params_file) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise InputError(f"{params_file} must hold a mapping of parameter names to values")
        raw.update(loaded)
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--param {pair!r} is not KEY=VALUE")
        k, v = pair.split("=", 1)
        raw[k.strip()] = v
    out = {}
    for k, v in raw.items():
        if k not in inputs:
            raise InputError(
                f"pipeline {pipeline.name} has no parameter {k!r}",
                hint=f"known: {', '.join(sorted(inputs))}",
            )
        out[k] = _typed(k, v, str(inputs[k].type))
    return out


def _typed(name: str, v, kind: str):
    from cscl.errors import InputError

    if not isinstance(v, str):
        return v
    try:
        if kind == "Integer":
            return int(v)
        if kind == "Float":
            return float(v)
        if kind == "Boolean":
            if v.lower() in ("1", "true", "yes", "on"):
                return True
            if v.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(v)
    except ValueError as exc:
        raise InputError(f"parameter {name} must be {kind}, got {v!r}") from exc
    return v


def run(args: argparse.Namespace) -> int:
    import os

    from cscl_platform.pipelines import available, build
    from cscl_platform.pipelines.compile import compile_pipeline, pipeline_version

    if args.action == "compile":
        names = available() if args.name == "all" else [args.name]
        for name in names:
            path = compile_pipeline(name, args.out, cluster=not args.local, version=args.version)
            print(f"{name}: {path}")
        return 0

    pipeline = build(args.name, cluster=args.action == "submit")
    params = parse_params(
        pipeline, args.param, args.params_file, getattr(args, "cohort_config", None)
    )
    if args.s3_endpoint:
        params["s3_endpoint"] = args.s3_endpoint

    if args.action == "submit":
        from pathlib import Path

        from cscl_platform.pipelines.submit import submit

        if args.package:
            package = Path(args.package)
            version = package.stem.removeprefix(f"{args.name}-")
        else:
            version = pipeline_version()
            package = compile_pipeline(args.name, "dist/pipelines", cluster=True, version=version)
        res = submit(
            package,
            args.host,
            pipeline_name=pipeline.name,
            version_name=version,
            params=params,
            experiment=args.experiment,
            run_name=args.run_name,
            enable_caching=args.caching,
            namespace=args.namespace,
            token=os.environ.get(args.token_env) or None,
            service_account=args.service_account,
        )
        print(f"pipeline {pipeline.name} ({res.pipeline_id}) version {version} ({res.version_id})")
        print(f"run {res.run_id}: {res.run_url}")
        return 0

    from cscl_platform.pipelines.local import run_local

    res = run_local(args.name, params, args.pipeline_root)
    print(f"run finished in {res.seconds:.0f} s; outputs under {res.run_dir}")
    for key, path in sorted(res.artifacts.items()):
        print(f"  {key}: {path}")
    return 0
