"""`cscl pretrain`: stage 1 adapter or stage 2 slide encoder (CSCL and baselines)."""

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
        choices=("cscl", "histostainalign", "madeleine", "supervised"),
        default="cscl",
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


SMALL_ABMIL = dict(hidden=128, n_heads=2, head_dim=64, attn_hidden=64, embed_dim=64, token_dim=32)


def _set(cfg, **kv) -> None:
    for k, v in kv.items():
        if v is not None:
            setattr(cfg, k, v)


def run(args: argparse.Namespace) -> int:
    import torch

    from cscl.data import load_cohort
    from cscl.errors import InputError
    from cscl.registration import load_registrations

    if args.threads:
        torch.set_num_threads(args.threads)

    data_info = {"features_dir": str(args.features), "manifest": str(args.manifest)}
    cohort = load_cohort(
        args.features, args.manifest, on_missing_file="skip" if args.skip_missing else "error"
    )
    regs = load_registrations(args.registration) if args.registration else None
    if args.registration:
        data_info["registration"] = str(args.registration)
    if args.stage == "adapter":
        from cscl.train.stage1 import AdapterConfig, train_adapter

        if args.objective != "cscl":
            raise InputError(
                f"--stage adapter trains the CSCL adapter; objective {args.objective!r} has none",
                hint="run --stage slide directly for histostainalign/madeleine/supervised",
            )
        cfg = AdapterConfig(seed=args.seed, device=args.device, quiet=args.quiet)
        _set(cfg, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
             pairing=args.pairing, pairs_per_case=args.pairs_per_case,
             warmup_epochs=args.warmup_epochs, temperature=args.temperature,
             got_weight=args.got_weight)  # fmt: skip
        if args.scales:
            cfg.scales = [s.strip() for s in args.scales.split(",") if s.strip()]
        cfg.residual = args.residual
        out = train_adapter(cohort, args.out, cfg, regs, data_info)
        print(f"wrote {out}")
        return 0

    from cscl.train.stage2 import SlideConfig, objective_defaults, train_slide_encoder

    cfg = SlideConfig(objective=args.objective, seed=args.seed, device=args.device,
                      quiet=args.quiet)  # fmt: skip
    _set(cfg, **objective_defaults(args.objective))
    _set(cfg, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, pairing=args.pairing,
         n_tokens=args.tokens, warmup_epochs=args.warmup_epochs, rankme_after=args.rankme_after,
         temperature=args.temperature, got_weight=args.got_weight, label_task=args.label_task,
         ihc_stain=args.ihc_stain, he_query_branch=args.he_query_branch)  # fmt: skip
    if args.no_fusion:
        cfg.fusion = False
    if args.no_stain_embed:
        cfg.stain_embed = False
    if args.small:
        cfg.abmil = dict(SMALL_ABMIL)
    if args.objective in ("histostainalign", "supervised"):
        if not args.labels or not args.label_task:
            raise InputError(f"objective {args.objective} needs --labels and --label-task")
        from cscl.io.manifest import load_labels

        labels = load_labels(args.labels)
        data_info["labels"] = str(args.labels)
        if args.objective == "histostainalign":
            from cscl.train.histostainalign import train_histostainalign as fn
        else:
            from cscl.train.supervised import train_supervised as fn
        out = fn(cohort, labels, args.out, cfg, args.adapter, data_info)
    else:
        out = train_slide_encoder(cohort, args.out, cfg, args.adapter, regs, data_info)
    print(f"wrote {out}")
    return 0
