"""`cscl synth`: write a synthetic paired H&E/IHC cohort folder with planted labels."""

from __future__ import annotations

import argparse

HELP = "Generate a synthetic paired multi-stain WSI cohort (slides, manifest, labels, transforms)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output cohort folder (created)")
    p.add_argument("--cases", type=int, default=24, help="number of cases (default 24)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--stains",
        default="HE,HER2,KI67,ER,PGR",
        help="comma-separated stains, HE required (default HE,HER2,KI67,ER,PGR)",
    )
    p.add_argument("--width", type=int, default=6000, help="level-0 width in px (default 6000)")
    p.add_argument("--height", type=int, default=4000, help="level-0 height in px (default 4000)")
    p.add_argument("--mpp", type=float, default=0.5, help="µm per level-0 pixel (default 0.5)")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("aperio", "generic"),
        default="aperio",
        help="aperio = SVS with MPP; generic = plain tiled pyramidal TIFF without mpp",
    )
    p.add_argument(
        "--no-mpp",
        action="store_true",
        help="with --format generic: leave mpp blank in the manifest (slides then have no mpp)",
    )
    p.add_argument(
        "--shift",
        default=None,
        help="appearance shift: preset (none, stain, scanner, composition, mild, strong) or "
        "'stain:0.5,scanner:0.3,composition:0.2'",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument(
        "--missing-ihc-rate",
        type=float,
        default=0.0,
        help="fraction of IHC slides dropped at random (default 0)",
    )
    p.add_argument(
        "--he-cue",
        type=float,
        default=1.0,
        help="strength of the weak per-cell status cue in H&E (0 = none, default 1)",
    )
    p.add_argument(
        "--max-angle", type=float, default=20.0, help="max IHC rotation in degrees (default 20)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress (bar, or log lines)")


def run(args: argparse.Namespace) -> int:
    import time

    from cscl.errors import InputError
    from cscl.synthetic import generate_cohort

    if args.no_mpp and args.fmt != "generic":
        raise InputError("--no-mpp only applies to --format generic", hint="add --format generic")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    stains = [s for s in args.stains.split(",") if s.strip()]
    t0 = time.perf_counter()
    stats: dict = {}
    manifest = generate_cohort(
        args.out,
        n_cases=args.cases,
        seed=args.seed,
        stains=stains,
        width=args.width,
        height=args.height,
        mpp=args.mpp,
        fmt=args.fmt,
        shift=args.shift,
        workers=args.workers,
        missing_ihc_rate=args.missing_ihc_rate,
        manifest_mpp=not args.no_mpp,
        he_cue=args.he_cue,
        max_angle=args.max_angle,
        progress=not args.quiet,
        stats=stats,
    )
    print(
        f"wrote {manifest} in {time.perf_counter() - t0:.1f} s "
        f"({stats['slides_rendered']} slides rendered, {stats['slides_kept']} kept from an "
        f"earlier run, {stats['render_cpu_s']:.1f} CPU-s)"
    )
    return 0
