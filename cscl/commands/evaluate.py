"""`cscl evaluate`: few-shot, k-fold and survival evaluation of slide embeddings → report."""

from __future__ import annotations

import argparse

HELP = "evaluate slide embeddings on declared label tasks (few-shot, k-fold, survival) → report"

# Cohort config key (cscl/config.py) → option it fills (`cscl --config FILE evaluate`).
CONFIG = {
    "labels": "labels_uri",
    "tasks": "tasks",
    "protocol": "protocols",
    "folds": "folds",
    "bootstrap": "n_boot",
    "ks": "ks",
    "seed": "seed",
    "score_metric": "score_metric",
    "min_score": "min_score",
    "quiet": "quiet",
}


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embeddings", required=True, help="embeddings Parquet of the method (cscl embed)"
    )
    p.add_argument("--name", default="cscl", help="name of the method in the report")
    p.add_argument("--labels", required=True, help="labels table (CSV/Parquet, local or s3://)")
    p.add_argument(
        "--tasks",
        required=True,
        help="comma-separated task names: label columns, or NAME for NAME_time/NAME_event survival",
    )
    p.add_argument("--out", required=True, help="output folder (metrics.json, report.html, …)")
    p.add_argument(
        "--protocol",
        "--protocols",
        default="fewshot,kfold,survival",
        help="comma-separated subset of fewshot,kfold,survival",
    )
    p.add_argument("--folds", type=int, default=5, help="outer folds (k-fold and survival)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of folds, draws and searches")
    p.add_argument("--bootstrap-seed", type=int, default=42, help="seed of the bootstrap resamples")
    p.add_argument("--ks", type=_ints, default=[1, 5, 10, 25], help="few-shot k values")
    p.add_argument("--draws", type=int, default=10, help="few-shot draws per k")
    p.add_argument(
        "--fewshot-scale", action="store_true", help="StandardScaler before the few-shot probe"
    )
    p.add_argument("--n-iter", type=int, default=10, help="randomized-search candidates of C")
    p.add_argument("--inner-folds", type=int, default=5, help="inner folds of the C search")
    p.add_argument("--cox-components", type=int, default=None, help="PCA components for Cox")
    p.add_argument("--cox-alpha", type=float, default=1.0, help="ridge penalty of the Cox model")
    p.add_argument(
        "--triage-sensitivities",
        type=_floats,
        default=[0.9, 0.95, 0.99],  # = cscl.eval.triage.TARGET_SENSITIVITIES
        help="IHC triage of <marker>_status tasks: target sensitivities of its operating table "
        "(0.9,0.95,0.99; '' for no triage)",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="another embeddings table to compare with (repeatable)",
    )
    p.add_argument(
        "--baseline-name",
        action="append",
        default=[],
        help="name of each --baseline, in the same order (default: file name)",
    )
    p.add_argument(
        "--score-metric",
        default="kfold_auc",
        help="metric of the printed quality score (mean over tasks; default kfold_auc)",
    )
    p.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="quality gate: the report says whether the method's quality score reaches it",
    )
    p.add_argument(
        "--time-unit",
        default=None,
        help="unit of the survival times (e.g. months) for the Kaplan-Meier axis; "
        "default: the axis names the <task>_time column",
    )
    p.add_argument("--quiet", action="store_true", help="no progress (bar, or log lines)")
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cscl.errors import InputError
    from cscl.eval.headline import QualityGate, ReportOptions
    from cscl.eval.metrics import method_values
    from cscl.eval.quality import check_score_metric, score_summary
    from cscl.eval.run import evaluate

    check_score_metric(args.score_metric)

    if len(args.baseline_name) > len(args.baseline):
        raise InputError("more --baseline-name than --baseline options")
    tables = {args.name: args.embeddings}
    for i, uri in enumerate(args.baseline):
        name = args.baseline_name[i] if i < len(args.baseline_name) else Path(uri).stem
        if name in tables:
            raise InputError(
                f"two embeddings tables are named {name!r}", hint="use --baseline-name"
            )
        tables[name] = uri
    metrics = evaluate(
        tables,
        args.labels,
        args.tasks,
        args.out,
        args.protocol,
        folds=args.folds,
        n_boot=args.bootstrap,
        seed=args.seed,
        boot_seed=args.bootstrap_seed,
        ks=args.ks,
        draws=args.draws,
        fewshot_scale=args.fewshot_scale,
        n_iter=args.n_iter,
        inner_folds=args.inner_folds,
        cox_components=args.cox_components,
        cox_alpha=args.cox_alpha,
        triage_sensitivities=args.triage_sensitivities,
        progress=not args.quiet,
        report_options=ReportOptions(
            score_metric=args.score_metric,
            gate=QualityGate(min_score=args.min_score) if args.min_score is not None else None,
            time_unit=args.time_unit,
        ),
    )
    for task, entry in metrics["tasks"].items():
        for method, result in entry["results"].items():
            values = method_values(result)
            for name in ("kfold_auc", "cindex"):
                if name in values:
                    print(f"{f'{task}.{method}.{name}':50s} {values[name]:.3f}")
    print(f"quality score: {score_summary(metrics, args.name, args.score_metric).describe()}")
    for task, entry in metrics["tasks"].items():  # the IHC triage in plain words
        triage = (entry["results"].get(args.name, {}).get("kfold") or {}).get("triage")
        for row in (triage or {}).get("operating_points", []):
            print(f"{task}: {row['sentence']}")
    for item in metrics["skipped"]:
        where = " ".join(str(item[k]) for k in ("task", "method", "protocol") if item.get(k))
        print(f"skipped {where}: {item['reason']}")
    out = Path(args.out)
    print(f"wrote {out / 'metrics.json'}, {out / 'report.html'}, {out / 'predictions.parquet'}")
    return 0
