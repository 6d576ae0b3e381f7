"""`cscl embed`: H&E slide embeddings (Parquet) from a trained run dir or the mean-pool baseline."""

from __future__ import annotations

import argparse

HELP = "embed the H&E slides of a manifest with a trained model (or --model mean-pool)"

# Cohort config key (cscl/config.py) → option it fills (`cscl --config FILE embed`).
CONFIG = {"manifest": "manifest_uri", "device": "device", "quiet": "quiet"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run dir from `cscl pretrain`, or mean-pool")
    p.add_argument("--features", required=True, help="feature files dir (local or s3://)")
    p.add_argument("--manifest", required=True, help="cohort manifest (CSV/Parquet)")
    p.add_argument("--out", required=True, help="output Parquet path")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress (bar, or log lines)")


def run(args: argparse.Namespace) -> int:
    import sys

    from cscl.embed import embed_cohort

    summary = embed_cohort(
        args.model, args.features, args.manifest, args.out, device=args.device, quiet=args.quiet
    )
    print(f"{summary.n_embedded} slide(s) embedded, {len(summary.failed)} failed → {summary.path}")
    for failure in summary.failed:
        print(f"  FAILED {failure}", file=sys.stderr)
    return 0 if summary.ok else 1
