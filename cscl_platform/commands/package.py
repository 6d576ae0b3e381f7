"""`cscl package`: a trained run → model bundle directory + TorchServe .mar (+ upload)."""

from __future__ import annotations

import argparse

HELP = "package a trained run as a model bundle and a TorchServe .mar (optionally upload to S3)"

DEFAULT_TASKS = "er_status,pgr_status,her2_status,ki67_status,subtype,os"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run dir from `cscl pretrain`")
    p.add_argument("--out", required=True, help="output folder: <out>/<name>/ and <out>/<name>.mar")
    p.add_argument("--features", help="feature files of the run (default: the run's features_dir)")
    p.add_argument("--labels", help="labels table: fit task heads (needs --embeddings)")
    p.add_argument("--embeddings", help="embeddings Parquet of this run (`cscl embed`)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"head tasks (default {DEFAULT_TASKS})")
    p.add_argument("--name", default="cscl", help="model name (URL /predictions/<name>)")
    p.add_argument("--version", help="model version (default <cscl version>+<git commit>)")
    p.add_argument("--backbone-weights", help="patch backbone weights the features came from")
    p.add_argument("--backbone-seed", type=int, default=0, help="seed of a random-init backbone")
    p.add_argument("--min-tissue", type=float, default=0.25, help="min tissue used at extraction")
    p.add_argument(
        "--features-only", action="store_true", help="serve feature files only (no backbone)"
    )
    p.add_argument("--metrics", help="metrics.json of `cscl evaluate`, stored in the bundle")
    p.add_argument("--batch-size", type=int, default=8, help="TorchServe batch size (8)")
    p.add_argument("--max-batch-delay", type=int, default=20, help="TorchServe batch delay ms")
    p.add_argument("--response-timeout", type=int, default=900, help="seconds per request (900)")
    p.add_argument("--seed", type=int, default=0, help="seed of the head fitting")
    p.add_argument("--n-iter", type=int, default=10, help="C candidates of the head search")
    p.add_argument("--upload", help="s3://bucket/prefix/models/: upload <name>/<version>/…")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (MinIO, moto…); else AWS_ENDPOINT_URL")
    p.add_argument("--no-mar", action="store_true", help="write the bundle directory only")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from cscl import __version__
    from cscl.bundle import (
        build_mar,
        feature_preprocessing,
        git_version,
        qc_records,
        reference_inputs,
        save_bundle,
    )
    from cscl.errors import InputError
    from cscl.train.checkpoint import read_config

    cfg = read_config(args.model)
    data = cfg.get("data") or {}
    features = args.features or data.get("features_dir")
    if not features or not data.get("extractor_hash"):
        raise InputError(
            f"run {args.model} does not name its feature files", hint="pass --features DIR"
        )
    backbone, pre = feature_preprocessing(
        features,
        data["extractor_hash"],
        backbone_weights=args.backbone_weights,
        backbone_seed=args.backbone_seed,
        min_tissue=args.min_tissue,
        features_only=args.features_only,
    )
    version = args.version or f"{__version__}+{git_version()}"
    heads, ref_args, labels = None, None, None
    if args.labels and not args.embeddings:
        raise InputError("--labels needs --embeddings (from `cscl embed --model RUN_DIR`)")
    if args.embeddings:
        from cscl.io.manifest import load_labels

        labels = load_labels(args.labels) if args.labels else None
        meta, X, aligned = reference_inputs(
            args.embeddings, labels, features, cfg.get("model_version")
        )
        preds: list[dict] = [{} for _ in range(len(X))]
        if aligned is not None:
            from cscl.eval.heads import apply_heads, fit_heads
            from cscl.eval.tasks import parse_tasks

            tasks = parse_tasks(args.tasks, aligned)
            heads = fit_heads(X, aligned, tasks, seed=args.seed, n_iter=args.n_iter)
            preds = [apply_heads(heads, x.astype(np.float64)) for x in X]
        qcs = qc_records(features, meta["slide_id"].astype(str).tolist())
        if qcs is None:
            print("note: feature files lack `qc` attributes; no reference set for monitoring")
        else:
            lab = None
            if aligned is not None:
                lab = {t.name: aligned[t.name].tolist() for t in tasks if t.name in aligned}
            ref_args = dict(embeddings=X, predictions=preds, qc_records=qcs,
                            slide_ids=meta["slide_id"].astype(str).tolist(), labels=lab)  # fmt: skip
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    out = Path(args.out)
    bundle_dir = out / args.name
    reference = None
    if ref_args is not None:
        from cscl.monitoring.reference import write_reference

        bundle_dir.mkdir(parents=True, exist_ok=True)
        reference = write_reference(bundle_dir / "reference.parquet", model_version=version,
                                    **ref_args)  # fmt: skip
    save_bundle(
        bundle_dir,
        args.model,
        heads,
        backbone,
        pre,
        version,
        data.get("fingerprint"),
        metrics,
        reference,
        name=args.name,
        git_commit=git_version(),
    )
    print(f"bundle  {bundle_dir}  (version {version}, heads: {', '.join(heads or {}) or 'none'})")
    mar = None
    if not args.no_mar:
        mar = build_mar(
            bundle_dir,
            out,
            args.name,
            version,
            batch_size=args.batch_size,
            max_batch_delay=args.max_batch_delay,
            response_timeout=args.response_timeout,
        )
        print(f"archive {mar}")
    if args.upload:
        from cscl.bundle import upload_release

        dest = upload_release(bundle_dir, mar, args.upload, args.name, version, args.s3_endpoint)
        print(f"uploaded to {dest}")
    return 0
