"""Registration speed and accuracy on a synthetic cohort (true transforms known).

    .venv/bin/python benchmarks/registration_bench.py --cases 4 --width 6000 --height 4000

Prints seconds per pair and the error vs the true transforms (µm). The cohort is generated once
into --dir and reused.
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
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
