"""`cscl package`: a trained run → model bundle directory + TorchServe .mar (+ upload)."""

from __future__ import annotations

import argparse

HELP = "package a trained run as a model bundle and a TorchServe .mar (optionally upload to S3)"

DEFAULT_TASKS = "er_status,pgr_status,her2_status,ki67_status,subtype,os"  # cscl.packaging

# Cohort config key (cscl/config.py) → option it fills (`cscl --config FILE package`): the
# encoder weights, seed and tissue threshold of extraction are stated once, in the config.
CONFIG = {
    "labels": "labels_uri",
    "tasks": "tasks",
    "name": "model_name",
    "version": "version",
    "backbone_weights": "weights",
    "backbone_seed": "seed",
    "min_tissue": "min_tissue",
    "seed": "seed",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run dir from `cscl pretrain`")
    p.add_argument("--out", required=True, help="output folder: <out>/<name>/ and <out>/<name>.mar")
    p.add_argument("--features", help="feature files of the run (default: the run's features_dir)")
    p.add_argument("--labels", help="labels table: fit task heads (needs --embeddings)")
    p.add_argument("--embeddings", help="embeddings Parquet of this run (`cscl embed`)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="head tasks")
    p.add_argument("--name", default="cscl", help="model name (URL /predictions/<name>)")
    p.add_argument(
        "--version", help="model version (default <cscl version>+<hash of the run's weights>)"
    )
    p.add_argument("--backbone-weights", help="patch backbone weights the features came from")
    p.add_argument("--backbone-seed", type=int, default=0, help="seed of a random-init backbone")
    p.add_argument("--min-tissue", type=float, default=0.25, help="min tissue used at extraction")
    p.add_argument(
        "--features-only", action="store_true", help="serve feature files only (no backbone)"
    )
    p.add_argument("--metrics", help="metrics.json of `cscl evaluate`, stored in the bundle")
    p.add_argument("--batch-size", type=int, default=8, help="TorchServe batch size")
    p.add_argument(
        "--max-batch-delay",
        type=int,
        default=1,  # = cscl_platform.serving.archive.DEFAULT_MAX_BATCH_DELAY_MS (tested)
        help="TorchServe batch delay in ms (why 1: docs/PERFORMANCE.md)",
    )
    p.add_argument("--response-timeout", type=int, default=900, help="seconds per request")
    p.add_argument("--seed", type=int, default=0, help="seed of the head fitting")
    p.add_argument("--n-iter", type=int, default=10, help="C candidates of the head search")
    p.add_argument(
        "--triage-sensitivity",
        type=float,
        default=0.95,  # = cscl.eval.triage_head.DEFAULT_TRIAGE_SENSITIVITY
        help="served IHC triage of <marker>_status heads: the sensitivity for positives its "
        "threshold keeps on the reference cases (0.95; 0: no triage)",
    )
    p.add_argument("--upload", help="s3://bucket/prefix/models/: upload <name>/<version>/…")
    p.add_argument("--no-mar", action="store_true", help="write the bundle directory only")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cscl.packaging import BundleSpec
    from cscl_platform.serving.package import package_model

    spec = BundleSpec(
        features_dir=args.features,
        labels=args.labels,
        embeddings=args.embeddings,
        tasks=args.tasks,
        name=args.name,
        version=args.version,
        backbone_weights=args.backbone_weights,
        backbone_seed=args.backbone_seed,
        min_tissue=args.min_tissue,
        features_only=args.features_only,
        metrics=json.loads(Path(args.metrics).read_text()) if args.metrics else None,
        seed=args.seed,
        n_iter=args.n_iter,
        triage_sensitivity=args.triage_sensitivity or None,
    )
    done = package_model(
        args.model,
        args.out,
        spec,
        mar=not args.no_mar,
        batch_size=args.batch_size,
        max_batch_delay=args.max_batch_delay,
        response_timeout=args.response_timeout,
        upload=args.upload,
    )
    heads = ", ".join(done.bundle.heads) or "none"
    print(f"bundle  {done.bundle.path}  (version {done.version}, heads: {heads})")
    if done.mar is not None:
        print(f"archive {done.mar}")
    if done.release_uri:
        print(f"uploaded to {done.release_uri}")
    return 0
