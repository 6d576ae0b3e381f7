"""`cscl synth` speed and memory.

(a) a cohort (default: 24 cases × 5 stains, 6000×4000 px at 0.5 mpp, all cores): wall seconds
    and CPU seconds of the run (parent + workers). CPU-s / cores estimates the wall time on an
    idle machine; the load average is printed because the wall figure is meaningless on a
    busy one. Also tissue patches per H&E slide (224 px at 1 µm/px, > 50 % tissue).
(b) one H&E slide of SIZE² and of SIZE/4², each in a subprocess: wall, CPU and peak RSS.
    Memory must not grow with slide size (the writer streams strips).

  .venv/bin/python benchmarks/synth.py                 # (a) + (b) with SIZE=20000
  .venv/bin/python benchmarks/synth.py --skip-cohort --size 40000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = """
import sys, time
from cscl.synthetic import generate_cohort
t = time.perf_counter()
stats = {}
generate_cohort(sys.argv[1], n_cases=int(sys.argv[2]), seed=0, stains=sys.argv[3].split(","),
                width=int(sys.argv[4]), height=int(sys.argv[5]), workers=int(sys.argv[6]),
                progress=False, stats=stats)
print(time.perf_counter() - t, stats["render_cpu_s"])
"""


def run_child(out: Path, cases: int, stains: str, w: int, h: int, workers: int) -> dict:
    """Run generate_cohort in a fresh process. CPU = the workers' own process time (pool workers
    are grandchildren, invisible to RUSAGE_CHILDREN); peak RSS = the child's (workers=1)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(out), str(cases), stains, str(w), str(h), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    gen_s, worker_cpu = (float(x) for x in res.stdout.strip().splitlines()[-1].split())
    return {
        "wall_s": wall,
        "generate_s": gen_s,
        "cpu_s": own + worker_cpu if workers > 1 else own,
        "peak_rss_mb": after.ru_maxrss / 1024,  # largest child so far (KiB on Linux)
    }


def tissue_patches(slide: Path, patch_um: float = 224.0) -> int:
    """Number of 224 µm grid squares that are more than half tissue (from level 2)."""
    import openslide

    s = openslide.OpenSlide(str(slide))
    lvl = min(2, s.level_count - 1)
    img = np.asarray(s.read_region((0, 0), lvl, s.level_dimensions[lvl]).convert("RGB"))
    od = (-np.log10(np.clip((img + 1.0) / 256.0, 1e-3, 1))).sum(-1)
    mask = od > 0.1
    mpp = float(s.properties.get("openslide.mpp-x", 0.5)) * s.level_downsamples[lvl]
    step = max(1, int(round(patch_um / mpp)))
    h, w = mask.shape
    n = 0
    for y in range(0, h - step + 1, step):
        for x in range(0, w - step + 1, step):
            n += mask[y : y + step, x : x + step].mean() > 0.5
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--stains", default="HE,HER2,KI67,ER,PGR")
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--size", type=int, default=20000, help="big single-slide side (px)")
    ap.add_argument("--skip-cohort", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"cores={cores} loadavg={os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        if not args.skip_cohort:
            out = Path(tmp) / "cohort"
            r = run_child(out, args.cases, args.stains, args.width, args.height, args.workers)
            n_slides = len(list((out / "slides").iterdir()))
            he = sorted((out / "slides").glob("*_HE.svs"))
            patches = [tissue_patches(p) for p in he]
            print(
                f"(a) cohort {args.cases} cases × {len(args.stains.split(','))} stains "
                f"({n_slides} slides, {args.width}×{args.height}) workers={args.workers}: "
                f"wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s "
                f"(≈ {r['cpu_s'] / min(cores, args.workers):.1f} s on {min(cores, args.workers)} "
                f"idle cores; {r['cpu_s'] / n_slides:.2f} CPU-s/slide); tissue patches per H&E "
                f"slide: min {min(patches)}, median {int(np.median(patches))}, max {max(patches)}"
            )
        if not args.skip_big:
            for side in (args.size // 4, args.size):
                out = Path(tmp) / f"big{side}"
                r = run_child(out, 1, "HE", side, side, 1)
                mpx = side * side / 1e6
                print(
                    f"(b) one H&E slide {side}×{side} ({mpx:.0f} Mpx): wall {r['wall_s']:.1f} s, "
                    f"CPU {r['cpu_s']:.1f} s ({mpx / r['cpu_s']:.1f} Mpx/CPU-s), "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB, "
                    f"file {(out / 'slides/case000_HE.svs').stat().st_size / 1e6:.0f} MB"
                )


if __name__ == "__main__":
    main()
