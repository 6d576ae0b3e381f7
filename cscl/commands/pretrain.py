"""`cscl pretrain`: stage 1 adapter or stage 2 slide encoder (CSCL and baselines).

Maps flags to an objective name + config overrides and calls `cscl.train.pretrain` (the same
function the pretrain components call)."""

from __future__ import annotations

import argparse

HELP = "pretrain the CSCL adapter (--stage adapter) or slide encoder (--stage slide)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, help="feature files dir (local or s3://)")
    p.add_argument("--manifest", required=True, help="cohort manifest (CSV/Parquet)")
    p.add_argument("--stage", choices=("adapter", "slide"), required=True)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--adapter", default=None, help="stage-1 run dir (stage slide, cscl)")
    p.add_argument("--registration", default=None, help="registration.csv or transforms.csv")
    p.add_argument("--pairing", choices=("location", "identity", "random"), default=None)
    p.add_argument(
        "--objective",
        default="cscl",
        help="stage-2 objective: cscl, madeleine, histostainalign, supervised, or any other "
        "registered one (cscl.train.list_objectives())",
    )
    p.add_argument("--labels", default=None, help="labels table (histostainalign, supervised)")
    p.add_argument("--label-task", default=None, help="label column, e.g. er_status")
    p.add_argument("--ihc-stain", default=None, help="HistoStainAlign IHC stain (default: task's)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--tokens", type=int, default=None, help="tokens per slide (stage 2)")
    p.add_argument("--pairs-per-case", type=int, default=None, help="stage 1 pairs per case")
    p.add_argument("--warmup-epochs", type=int, default=None)
    p.add_argument("--rankme-after", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--got-weight", type=float, default=None)
    p.add_argument("--scales", default=None, help="stage 1 scales, e.g. 10x,5x")
    p.add_argument("--residual", action="store_true", help="adapter x + α·adapter(x)")
    p.add_argument("--no-fusion", action="store_true")
    p.add_argument("--no-stain-embed", action="store_true")
    p.add_argument(
        "--he-query-branch",
        choices=("alone", "fused"),
        default=None,
        help="stage 2: H&E embedding in the loss from H&E alone (default, = inference) or fused "
        "with IHC (the reference code's shortcut, for comparison)",
    )
    p.add_argument("--small", action="store_true", help="small ABMIL (hidden 128) for CPU/tests")
    p.add_argument("--skip-missing", action="store_true", help="skip missing feature files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import torch

    from cscl.errors import InputError
    from cscl.train import SMALL_ABMIL, pretrain

    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, pairing=args.pairing,
                  warmup_epochs=args.warmup_epochs, temperature=args.temperature,
                  got_weight=args.got_weight, seed=args.seed, device=args.device,
                  quiet=args.quiet)  # fmt: skip
    if args.stage == "adapter":
        if args.objective != "cscl":
            raise InputError(
                f"--stage adapter trains the CSCL adapter; objective {args.objective!r} has none",
                hint="run --stage slide directly for histostainalign/madeleine/supervised",
            )
        objective = "adapter"
        scales = [s.strip() for s in args.scales.split(",") if s.strip()] if args.scales else None
        overrides = dict(common, pairs_per_case=args.pairs_per_case, residual=args.residual,
                         scales=tuple(scales) if scales else None)  # fmt: skip
    else:
        objective = args.objective
        overrides = dict(common, n_tokens=args.tokens, rankme_after=args.rankme_after,
                         label_task=args.label_task, ihc_stain=args.ihc_stain,
                         he_query_branch=args.he_query_branch,
                         fusion=False if args.no_fusion else None,
                         stain_embed=False if args.no_stain_embed else None,
                         abmil=dict(SMALL_ABMIL) if args.small else None)  # fmt: skip
    out = pretrain(objective, features=args.features, manifest=args.manifest, out=args.out,
                   registration=args.registration, adapter=args.adapter, labels=args.labels,
                   config=overrides, skip_missing=args.skip_missing)  # fmt: skip
    print(f"wrote {out}")
    return 0
