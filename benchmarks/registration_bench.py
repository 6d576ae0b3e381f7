"""Registration speed and accuracy: synthetic cohort (true transforms) and real landmark pairs.

    .venv/bin/python benchmarks/registration_bench.py --cases 4 --width 6000 --height 4000
    .venv/bin/python benchmarks/registration_bench.py --real ../shared/data/real/pairs

Synthetic: seconds per pair and the error vs the true transforms (µm); the cohort is generated
once into --dir and reused. Real (`--real`): every sub-folder holding an H&E image `*HE*.jpg|png`
and IHC images, each with its ANHIR landmark CSV of the same stem, is registered H&E → IHC with
rigid, rigid + non-rigid, affine and affine + non-rigid maps; prints the ANHIR rTRE (median, max;
landmark distance / IHC image diagonal) before (identity) and after each, the QC texture and
whether the pair would be flagged.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="data/bench/registration")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-angle", type=float, default=20.0)
    ap.add_argument("--thumb-mpp", type=float, default=8.0)
    ap.add_argument("--affine", action="store_true")
    ap.add_argument("--real", default=None, help="folder of real ANHIR-style landmark pairs")
    ap.add_argument("--real-mpp", type=float, default=5.0, help="µm/px of the real images")
    args = ap.parse_args()
    if args.real:
        real_pairs(Path(args.real), args.real_mpp, args.thumb_mpp)
        return

    from cscl.registration import RegisterParams, register_manifest, summarize
    from cscl.synthetic import generate_cohort

    root = (
        Path(args.dir)
        / f"c{args.cases}_{args.width}x{args.height}_s{args.seed}_a{args.max_angle:g}"
    )
    manifest = root / "manifest.csv"
    if not manifest.exists():
        t0 = time.perf_counter()
        generate_cohort(
            root,
            n_cases=args.cases,
            seed=args.seed,
            width=args.width,
            height=args.height,
            max_angle=args.max_angle,
            progress=True,
        )
        print(f"generated cohort in {time.perf_counter() - t0:.1f} s: {root}")
    out = root / f"registration_t{args.thumb_mpp:g}{'_affine' if args.affine else ''}"
    params = RegisterParams(thumb_mpp=args.thumb_mpp, affine=args.affine)
    t0 = time.perf_counter()
    df = register_manifest(str(manifest), str(out), params=params, progress=True, resume=False)
    wall = time.perf_counter() - t0
    s = summarize(df)
    meta = json.loads((out / "registration.json").read_text())
    secs = np.array([p.get("seconds", np.nan) for p in meta["pairs"].values()], float)
    print(
        f"pairs: {s['n_pairs']} ({s['n_ok']} ok, {s['n_flagged']} flagged, {s['n_failed']} failed)"
    )
    print(
        f"wall {wall:.1f} s; per pair median {np.nanmedian(secs):.2f} s, max {np.nanmax(secs):.2f} s"
    )
    print(
        f"error vs truth: median {s['median_error_um']:.2f} µm, max {s['max_error_um']:.2f} µm; "
        f"median Dice {s['median_score']:.3f}"
    )
    tex = [p.get("texture_ncc", np.nan) for p in meta["pairs"].values()]
    print(f"texture NCC: min {np.nanmin(tex):.2f}, median {np.nanmedian(tex):.2f}")


def real_pairs(root: Path, mpp: float, thumb_mpp: float) -> None:
    """rTRE before/after per real pair and registration mode (see the module docstring)."""
    from PIL import Image

    from cscl.registration.quality import read_landmarks, rtre
    from cscl.registration.register import register_thumbs, thumb_from_rgb

    def load(path: Path):
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        return thumb_from_rgb(rgb, mpp, path.stem, thumb_mpp), read_landmarks(
            str(path.with_suffix(".csv"))
        )

    folders = sorted(p for p in [root, *root.iterdir()] if p.is_dir())
    modes = {"rigid": (False, False), "rigid+nonrigid": (False, True)}
    modes |= {"affine": (True, False), "affine+nonrigid": (True, True)}
    for folder in folders:
        images = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".png")]
        images = [p for p in images if p.with_suffix(".csv").exists()]
        he_files = [p for p in images if "HE" in p.stem.upper().replace("-", "_").split("_")]
        if not he_files:
            continue
        he, he_pts = load(he_files[0])
        for ihc_path in [p for p in images if p != he_files[0]]:
            ihc, ihc_pts = load(ihc_path)
            before = rtre(np.eye(2, 3), he_pts, ihc_pts, ihc.size0)
            print(f"{folder.name}: {he_files[0].stem} → {ihc_path.stem}")
            print(f"  identity          rTRE median {before[0]:.4f}, max {before[1]:.4f}")
            for name, (affine, nonrigid) in modes.items():
                t0 = time.perf_counter()
                reg = register_thumbs(he, ihc, affine=affine, nonrigid=nonrigid)
                after = rtre(reg.transform, he_pts, ihc_pts, ihc.size0)
                print(
                    f"  {name:17s} rTRE median {after[0]:.4f}, max {after[1]:.4f}; texture "
                    f"{reg.texture:.2f}, overlap {reg.score:.3f}, "
                    f"{'ok' if reg.ok else 'FLAGGED'}; {time.perf_counter() - t0:.1f} s "
                    f"{reg.steps}"
                )


if __name__ == "__main__":
    main()
