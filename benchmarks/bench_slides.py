"""The synthetic slides the benchmarks share: generated once under data/bench (git-ignored)."""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "data" / "bench"


def bench_slide(size: int) -> Path:
    """A size × size synthetic H&E slide at 0.5 µm/px (streamed writer), generated once."""
    from cscl.synthetic import generate_cohort

    out = BENCH_DIR / f"slide_{size}"
    slide = out / "slides" / "case000_HE.svs"
    if not slide.exists():
        print(f"generating {size}x{size} synthetic slide in {out} (once) …", flush=True)
        t0 = time.perf_counter()
        generate_cohort(
            out, n_cases=1, seed=0, stains=("HE",), width=size, height=size, progress=False
        )
        print(f"  … {time.perf_counter() - t0:.0f} s", flush=True)
    return slide
