"""`cscl pretrain`: stage 1 adapter or stage 2 slide encoder (CSCL and baselines).

Maps flags to an objective name + config overrides and calls `cscl.train.pretrain` (the same
function the pretrain components call). An option left out keeps the objective's default (shown
in `--help` from `SHOWN_DEFAULTS`); `--preset quick` swaps in a short schedule for a laptop."""

from __future__ import annotations

import argparse

HELP = "pretrain the CSCL adapter (--stage adapter) or slide encoder (--stage slide)"

# What --help shows as each setting's default, per objective ("adapter" = --stage adapter; an
# objective not listed has cscl's value). Display only: None on the command line means "the
# objective's own default". tests/cli/test_cli.py checks these against the objective configs.
SHOWN_DEFAULTS: dict[str, dict[str, object]] = {
    "epochs": {"adapter": 120, "cscl": 120, "histostainalign": 30},
    "batch_size": {"adapter": 8, "cscl": 24, "histostainalign": 8},
    "lr": {"adapter": 1e-4, "cscl": 1e-4, "histostainalign": 5e-5},
    "warmup_epochs": {"adapter": 5, "cscl": 5, "histostainalign": 2},
    "n_tokens": {"cscl": 2048, "histostainalign": 4096},
    "pairs_per_case": {"adapter": 256},
    "rankme_after": {"cscl": 20},
    "temperature": {"adapter": 0.07, "cscl": 0.07, "histostainalign": 0.01},
    "got_weight": {"adapter": 0.0, "cscl": 0.0, "histostainalign": 0.0, "supervised": 0.0},
    "pairing": {
        "adapter": "location",
        "cscl": "location",
        "madeleine": "random",
        "histostainalign": "random",
        "supervised": "random",
    },  # fmt: skip
    "scales": {"adapter": "10x"},
}


# Cohort config key (cscl/config.py) → option it fills (`cscl --config FILE pretrain`); epochs and
# batch size come from the key of the --stage being trained (adapter_epochs, slide_epochs, …).
def _of_stage(name: str):
    return lambda args: f"{args.stage}_{name}"


CONFIG = {
    "manifest": "manifest_uri",
    "preset": "preset",
    "objective": "objective",
    "labels": "labels_uri",
    "label_task": "label_task",
    "epochs": _of_stage("epochs"),
    "batch_size": _of_stage("batch_size"),
    "pairs_per_case": "pairs_per_case",
    "tokens": "n_tokens",
    "small": "small_encoder",
    "skip_missing": "skip_failed_slides",
    "seed": "seed",
    "device": "device",
    "quiet": "quiet",
}

# --preset quick / paper: cscl.train.presets (explicit options win over a preset)
PRESETS = ("quick", "paper")


def _default(name: str) -> str:
    shown = SHOWN_DEFAULTS[name]
    return "default: " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in shown.items())  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, help="feature files dir (local or s3://)")
    p.add_argument("--manifest", required=True, help="cohort manifest (CSV/Parquet)")
    p.add_argument(
        "--stage",
        choices=("adapter", "slide"),
        required=True,
        help="adapter = stage 1 (patch-level, H&E↔IHC); slide = stage 2 (slide encoder)",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="quick = a few epochs, fewer tokens, small ABMIL: the README walk-through in "
        "minutes on a laptop; paper = the paper's T=0.001, GOT and plain adapter (explicit "
        "options still win; default: none = the benchmark-backed recipe, docs/METHOD-NOTES.md)",
    )
    p.add_argument(
        "--adapter",
        default=None,
        help="stage-1 run dir, needed by --objective cscl (default: none)",
    )
    p.add_argument(
        "--registration",
        default=None,
        help="registration.csv (`cscl register`) or true transforms.csv; default: none "
        "(pairing by location then assumes aligned slides)",
    )
    p.add_argument(
        "--pairing",
        choices=("location", "identity", "random"),
        default=None,
        help=f"which H&E/IHC tokens are positives ({_default('pairing')})",
    )
    p.add_argument(
        "--objective",
        default="cscl",
        help="stage-2 objective: cscl, madeleine, histostainalign, supervised, or any other "
        "registered one (cscl.train.list_objectives(); default: cscl)",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="labels table for histostainalign, supervised (default: none)",
    )
    p.add_argument(
        "--label-task", default=None, help="label column, e.g. er_status (default: none)"
    )
    p.add_argument("--ihc-stain", default=None, help="HistoStainAlign IHC stain (default: task's)")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs ({_default('epochs')})")
    p.add_argument(
        "--batch-size", type=int, default=None, help=f"cases per step ({_default('batch_size')})"
    )
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate ({_default('lr')})")
    p.add_argument(
        "--tokens", type=int, default=None, help=f"tokens per slide ({_default('n_tokens')})"
    )
    p.add_argument(
        "--pairs-per-case",
        type=int,
        default=None,
        help=f"stage 1 token pairs per case and stain ({_default('pairs_per_case')})",
    )
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=None,
        help=f"linear LR warm-up before the cosine decay ({_default('warmup_epochs')})",
    )
    p.add_argument(
        "--rankme-after",
        type=int,
        default=None,
        help=f"stage 2: keep the best-RankMe epoch from this one on ({_default('rankme_after')})",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"InfoNCE temperature ({_default('temperature')})",
    )
    p.add_argument(
        "--got-weight",
        type=float,
        default=None,
        help=f"weight of the graph optimal-transport loss ({_default('got_weight')})",
    )
    p.add_argument(
        "--scales", default=None, help=f"stage 1 scales, e.g. 10x,5x ({_default('scales')})"
    )
    p.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stage 1: residual adapter x + α·adapter(x) (default: on; --no-residual = the "
        "paper's plain adapter)",
    )
    p.add_argument(
        "--no-fusion", action="store_true", help="stage 2: no cross-stain fusion (default: fused)"
    )
    p.add_argument(
        "--no-stain-embed",
        action="store_true",
        help="stage 2: no learned stain embedding (default: on for cscl)",
    )
    p.add_argument(
        "--he-query-branch",
        choices=("alone", "fused"),
        default=None,
        help="stage 2: H&E embedding in the loss from H&E alone (default, = inference) or fused "
        "with IHC (the reference code's shortcut, for comparison)",
    )
    p.add_argument(
        "--small", action="store_true", help="small ABMIL (hidden 128) for CPU/tests (default: off)"
    )
    p.add_argument(
        "--skip-missing", action="store_true", help="skip missing feature files (default: error)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of init, batches and draws (default: 0)"
    )
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress: no bar, no log line per epoch (default: off)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from cscl.errors import InputError
    from cscl.train import SMALL_ABMIL, pretrain
    from cscl.train.presets import preset_overrides

    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  pairing=args.pairing, warmup_epochs=args.warmup_epochs,
                  temperature=args.temperature, got_weight=args.got_weight, seed=args.seed,
                  device=args.device, quiet=args.quiet)  # fmt: skip
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
    # the preset fills what the command line left out (None)
    given = {k: v for k, v in overrides.items() if v is not None}
    overrides = {**preset_overrides(args.preset, objective), **given}
    out = pretrain(objective, features=args.features, manifest=args.manifest, out=args.out,
                   registration=args.registration, adapter=args.adapter, labels=args.labels,
                   config=overrides, skip_missing=args.skip_missing)  # fmt: skip
    print(f"wrote {out} (loss curve: {out}/loss.png, {out}/history.csv)")
    return 0
