"""`cscl run --config cohort.yaml`: the whole local chain on one cohort, resumable (cscl/chain.py)."""

from __future__ import annotations

import argparse

HELP = (
    "run a cohort config end to end here: extract → register → pretrain → embed → evaluate → "
    "package (reruns resume)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force", action="store_true", help="run every step again, even the finished ones"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the steps and their commands; run nothing"
    )


def run(args: argparse.Namespace) -> int:
    from cscl.chain import run_chain
    from cscl.cli import parse_args
    from cscl.errors import InputError

    cfg = args.cohort_config
    if cfg is None:
        raise InputError(
            "`cscl run` needs a cohort config",
            hint="cscl config init > cohort.yaml; edit it; cscl run --config cohort.yaml",
        )
    return run_chain(
        cfg, lambda argv: parse_args(argv, cfg), force=args.force, dry_run=args.dry_run
    )
