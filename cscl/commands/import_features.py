"""`cscl import-features`: a TRIDENT `features_<enc>/` or CLAM `h5_files/` folder → cscl feature
files with an extractor identity (so training, `cscl package --features-only` and serving accept
them); `--to-clam` writes CLAM's `pt_files/` + `h5_files/` from cscl feature files instead."""

from __future__ import annotations

import argparse

HELP = "import TRIDENT/CLAM feature files (derives their extractor identity); or export to CLAM"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src", help="folder of .h5 feature files (TRIDENT features_<enc>/, CLAM h5_files/)"
    )
    p.add_argument("--out", required=True, help="output folder: <out>/<slide_id>.h5")
    p.add_argument(
        "--source",
        default="auto",
        choices=("auto", "trident", "clam"),
        help="layout of SRC: auto tells TRIDENT and CLAM folders apart",
    )
    p.add_argument(
        "--encoder", help="patch encoder the features came from (TRIDENT: read from features_<enc>)"
    )
    p.add_argument(
        "--target-mpp", type=float, help="µm/px of the patches (TRIDENT: from its attrs)"
    )
    p.add_argument("--patch-size", type=int, help="patch side in px (TRIDENT: from its attrs)")
    p.add_argument("--stain", default="HE", help="stain of every slide in the folder")
    p.add_argument("--weights", help="weights digest/name: enters the identity when given")
    p.add_argument(
        "--to-clam",
        action="store_true",
        help="the other way: cscl feature files in SRC → CLAM pt_files/ + h5_files/ under --out",
    )


def run(args: argparse.Namespace) -> int:
    from cscl.interop import export_clam, import_features

    if args.to_clam:
        done = export_clam(args.src, args.out)
        print(f"{len(done)} slides → {args.out}/pt_files, {args.out}/h5_files (float32)")
        return 0
    s = import_features(
        args.src,
        args.out,
        source=args.source,
        encoder=args.encoder,
        target_mpp=args.target_mpp,
        patch_size=args.patch_size,
        stain=args.stain.upper().replace("H&E", "HE"),
        weights=args.weights,
    )
    print(
        f"{len(s.slides)} {s.source} feature files → {s.out_dir}: extractor {s.extractor_hash} "
        f"(encoder {s.encoder}, {s.identity['dim']}-d, {s.identity['target_mpp']} µm/px, "
        f"{s.identity['patch_size']} px)\nimported features cannot be recomputed from slides: "
        "package their models with `cscl package --features-only`"
    )
    return 0
