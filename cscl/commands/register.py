"""`cscl register`: register every IHC slide of a manifest to its case's H&E slide."""

from __future__ import annotations

import argparse

HELP = (
    "Register IHC slides to their H&E slide (rigid/affine + non-rigid refinement on thumbnails); "
    "writes registration.csv"
)

# Cohort config key (cscl/config.py) → option it fills (`cscl --config FILE register`).
CONFIG = {"manifest": "manifest_uri", "transforms": "transforms_uri", "quiet": "quiet"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cscl.registration.quality import (
        DEFAULT_MAX_ERROR_UM,
        DEFAULT_MIN_SCORE,
        DEFAULT_MIN_TEXTURE,
    )

    p.add_argument("--manifest", required=True, help="cohort manifest (CSV/Parquet, path or s3://)")
    p.add_argument("--out", required=True, help="output folder (registration.csv, overlays/)")
    p.add_argument(
        "--transforms",
        default=None,
        help="true transforms (synthetic cohorts) to report error_um; "
        "default: transforms.csv beside the manifest when present",
    )
    p.add_argument(
        "--affine",
        action="store_true",
        help="refine to a full affine map (kept only when the QC texture does not drop)",
    )
    p.add_argument(
        "--no-nonrigid",
        action="store_true",
        help="skip the non-rigid (optical-flow) refinement; matrices only",
    )
    p.add_argument(
        "--landmarks",
        default="",
        help="folder of <slide_id>.csv landmarks (ANHIR `,X,Y`, level-0 px; row i of the H&E and "
        "IHC files = the same point) to report rTRE; or a manifest column landmarks_uri",
    )
    p.add_argument(
        "--allow-flip", action="store_true", help="also try mirrored sections (mounted face down)"
    )
    p.add_argument("--thumb-mpp", type=float, default=8.0, help="µm/px of the thumbnails")
    p.add_argument(
        "--min-score",
        type=float,
        default=DEFAULT_MIN_SCORE,
        help="flag pairs whose tissue-mask Dice is below this",
    )
    p.add_argument(
        "--min-texture",
        type=float,
        default=DEFAULT_MIN_TEXTURE,
        help="flag pairs whose hematoxylin correlation is below this (wrong slide)",
    )
    p.add_argument(
        "--max-error-um",
        type=float,
        default=DEFAULT_MAX_ERROR_UM,
        help="flag pairs whose known error exceeds this many µm",
    )
    p.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    p.add_argument("--no-resume", action="store_true", help="redo pairs already registered")
    p.add_argument("--strict", action="store_true", help="exit 1 when any pair is flagged too")
    p.add_argument("--quiet", action="store_true", help="no progress (bar, or log lines)")


def run(args: argparse.Namespace) -> int:
    import math

    from rich.console import Console

    from cscl.registration.batch import RegisterParams, register_manifest, summarize

    params = RegisterParams(
        thumb_mpp=args.thumb_mpp,
        affine=args.affine,
        allow_flip=args.allow_flip,
        min_score=args.min_score,
        min_texture=args.min_texture,
        max_error_um=args.max_error_um,
        nonrigid=not args.no_nonrigid,
        landmarks=args.landmarks,
    )
    df = register_manifest(
        args.manifest,
        args.out,
        args.transforms,
        params=params,
        overlays=not args.no_overlays,
        resume=not args.no_resume,
        progress=not args.quiet,
    )
    s = summarize(df)
    con = Console(stderr=False)
    con.print(
        f"{s['n_pairs']} pairs: {s['n_ok']} ok, {s['n_flagged']} flagged, "
        f"{s['n_failed']} failed; median tissue overlap {s['median_score']:.3f}"
    )
    if not math.isnan(s["median_error_um"]):
        con.print(
            f"error vs true transforms: median {s['median_error_um']:.2f} µm, "
            f"max {s['max_error_um']:.2f} µm"
        )
    if s["n_pairs_with_landmarks"]:
        con.print(
            f"landmarks on {s['n_pairs_with_landmarks']} pair(s): rTRE median "
            f"{s['rtre_before_median']:.4f} → {s['rtre_median']:.4f} (before → after), max "
            f"{s['rtre_before_max']:.4f} → {s['rtre_max']:.4f}"
        )
        for r in df[df["n_landmarks"] > 0].itertuples():
            con.print(
                f"  {r.case_id} {r.stain}: rTRE median {r.rtre_before_median:.4f} → "
                f"{r.rtre_median:.4f}, max {r.rtre_before_max:.4f} → {r.rtre_max:.4f} "
                f"({r.n_landmarks} landmarks)",
                highlight=False,
            )
    bad = df[~df["ok"]]
    for r in bad.itertuples():
        con.print(f"  [red]{r.case_id} {r.stain}[/red]: {r.message}", highlight=False)
    con.print(f"wrote {args.out.rstrip('/')}/registration.csv")
    failed = s["n_failed"] > 0
    return 1 if failed or (args.strict and s["n_flagged"] > 0) else 0
