"""`cscl extract`: slides (a manifest or one file) → one patch-feature HDF5 per slide."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

HELP = "extract patch features from whole-slide images (manifest or one slide) into HDF5 files"

# Cohort config key (cscl/config.py) → option it fills (`cscl --config FILE extract`).
CONFIG = {
    "manifest": "manifest_uri",
    "store": "project_prefix",
    "backbone": "backbone",
    "weights": "weights",
    "random_init": "allow_random",
    "seed": "seed",
    "target_mpp": "target_mpp",
    "patch_size": "patch_size",
    "min_tissue": "min_tissue",
    "device": "device",
    "quiet": "quiet",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="cohort manifest (CSV/Parquet, local or s3://)")
    src.add_argument("--slide", help="one slide file (local or s3://)")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="output folder: <out>/<slide_id>.h5")
    dest.add_argument(
        "--store",
        metavar="PREFIX",
        help="with --manifest: project prefix (local or s3://); features go to "
        "<PREFIX>/features/<extractor-hash>/ and files already there are reused (as the pipeline)",
    )
    p.add_argument("--slide-id", help="with --slide: id (default: file name without extension)")
    p.add_argument("--stain", default="HE", help="with --slide: stain name (default HE)")
    p.add_argument("--mpp", type=float, help="with --slide: level-0 µm/px if the file lacks it")
    p.add_argument(
        "--backbone",
        "--encoder",
        dest="backbone",
        default="resnet18",
        help="patch encoder: a name from `cscl encoders` (uni, virchow2, …), "
        "timm:<model>[?k=v&…], or a timm model name (default resnet18)",
    )
    p.add_argument(
        "--feature-dtype",
        choices=("float32", "float16"),
        default="float32",
        help="dtype of the stored features (float32: CLAM/TRIDENT load them as is)",
    )
    p.add_argument("--weights", help="backbone weights: state-dict file or s3:// URI")
    p.add_argument(
        "--random-init", action="store_true", help="allow a random (seeded) backbone: tests only"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init (default 0)")
    p.add_argument("--target-mpp", type=float, default=1.0, help="patch resolution µm/px")
    p.add_argument("--patch-size", type=int, default=224, help="patch side in px")
    p.add_argument("--min-tissue", type=float, default=0.25, help="min tissue share of a patch")
    p.add_argument(
        "--min-saturation",
        type=float,
        default=None,
        help="tissue: floor of the saturation threshold (default 0.07; lower for pale stains)",
    )
    p.add_argument(
        "--no-pen-filter", action="store_true", help="tissue: keep blue/green/black ink pixels"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="patches per forward (default: 16 CPU, 64 GPU)"
    )
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPUs)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU: torch threads of the model (default: auto)"
    )
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="model arithmetic (default auto: bf16 on CUDA and on CPUs with native bf16, else "
        "fp32); part of the extractor hash when not fp32",
    )
    p.add_argument(
        "--reader",
        default="auto",
        help="slide reader backend: auto (OpenSlide, else the first that opens the file) | "
        "openslide | tifffile | pillow | cucim (when installed; only by name)",
    )
    p.add_argument(
        "--max-patches",
        type=int,
        default=None,
        help="fail a slide with more patches than this (default 100000; 0 = no bound)",
    )
    p.add_argument(
        "--tile-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="decode the JPEG tiles under the patches and flag slides with corrupt tiles "
        "(libjpeg warnings) in their QC and the summary (default on; a few %% of the time)",
    )
    p.add_argument(
        "--max-corrupt-tiles",
        type=int,
        default=None,
        metavar="N",
        help="fail a slide with more than N corrupt tiles (default: extract it, flagged)",
    )
    p.add_argument(
        "--prefetch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prepare the next slide (open, tissue, grid, tile check) in a helper process while "
        "this one runs its forward pass; with --store, download the next slide meanwhile "
        "(default on; same features and summary without)",
    )
    p.add_argument("--qc-png", metavar="DIR", help="write a tissue-mask overlay PNG per slide")
    p.add_argument("--quiet", action="store_true", help="no progress (bar, or log lines)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from cscl.errors import InputError
    from cscl.io.manifest import slide_id_from_uri
    from cscl.wsi.extract import ExtractConfig, extract_manifest, extract_slides
    from cscl.wsi.readers import list_readers
    from cscl.wsi.tissue import TissueParams

    if args.reader != "auto" and args.reader not in list_readers():
        raise InputError(
            f"unknown --reader {args.reader!r}", hint=f"use auto or one of {list_readers()}"
        )
    tissue = TissueParams(pen_filter=not args.no_pen_filter)
    if args.min_saturation is not None:
        tissue = replace(tissue, min_saturation=args.min_saturation)

    cfg = ExtractConfig(
        backbone=args.backbone,
        weights=args.weights,
        allow_random=args.random_init,
        seed=args.seed,
        target_mpp=args.target_mpp,
        patch_size=args.patch_size,
        min_tissue=args.min_tissue,
        tissue=tissue,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        torch_threads=args.threads,
        reader=args.reader,
        precision=args.precision,
        feature_dtype=args.feature_dtype,
        tile_check=args.tile_check,
        max_corrupt_tiles=args.max_corrupt_tiles,
        prefetch=args.prefetch,
    )
    if args.max_corrupt_tiles is not None and args.max_corrupt_tiles < 0:
        raise InputError(f"--max-corrupt-tiles must be >= 0, got {args.max_corrupt_tiles}")
    if args.max_patches is not None:
        if args.max_patches < 0:
            raise InputError(f"--max-patches must be >= 0, got {args.max_patches}")
        cfg.max_patches = args.max_patches or None
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    common = dict(qc_png_dir=args.qc_png, show_progress=not args.quiet)
    if args.store:
        return _extract_to_store(args, cfg)
    if args.manifest:
        if args.mpp or args.slide_id:
            raise InputError("--mpp/--slide-id go with --slide; use the manifest columns instead")
        summary = extract_manifest(args.manifest, args.out, cfg, **common)
    else:
        row = {
            "slide_uri": args.slide,
            "slide_id": args.slide_id or slide_id_from_uri(args.slide),
            "stain": args.stain.upper().replace("H&E", "HE"),
            "mpp": args.mpp,
        }
        summary = extract_slides(pd.DataFrame([row]), args.out, cfg, **common)
    print(
        f"extractor {summary.extractor_hash}: {len(summary.done)} done, "
        f"{len(summary.skipped)} skipped (reused), {len(summary.failed)} failed → {summary.out_dir}"
    )
    for r in summary.done:
        if r.warning:
            print(f"  WARNING {r.slide_id}: {r.warning}", file=sys.stderr)
    for r in summary.failed:
        print(f"  FAILED {r.slide_id}: {r.error}", file=sys.stderr)
    return 0 if summary.ok else 1


def _extract_to_store(args: argparse.Namespace, cfg) -> int:
    """`--store`: the pipeline's extraction (cscl.shards.extract_to_store) on the whole cohort."""
    from cscl.errors import InputError
    from cscl.ingest import ingest_cohort
    from cscl.shards import extract_to_store

    if not args.manifest:
        raise InputError("--store goes with --manifest", hint="use --out for one --slide")
    index = ingest_cohort(args.manifest, progress=not args.quiet).index
    ehash, rep = extract_to_store(index, cfg, args.store)
    c = rep.counts()
    print(f"extractor {ehash}: {c['extracted']} extracted, {c['reused']} reused, "
          f"{c['failed']} failed → {args.store.rstrip('/')}/features/{ehash}/")  # fmt: skip
    for sid in rep.failed:
        print(f"  FAILED {sid}", file=sys.stderr)
    return 1 if rep.failed else 0
