"""Tissue segmentation memory and time vs slide size: the whole-image algorithm (OLD, the
reference kept in tests/wsi/test_tissue_streaming.py) against the streamed one (NEW,
`cscl.wsi.tissue.segment_tissue`), side by side in interleaved rounds.

Every measurement is a fresh process: it imports everything (skimage.filters included, which
both import on first use) and opens the slide (its peak RSS then is the BASELINE), runs `segment_tissue` (OLD: read the thumbnail, then the reference
`segment_rgb`), and reports peak RSS (ru_maxrss), wall and CPU seconds. The segmentation's own
share is peak − baseline; what it must hold anyway is the thumbnail (3 B/px) and the mask it
returns (1 B/px), so `extra` = peak − baseline − thumbnail − mask. Slides are synthetic H&E at
0.5 µm/px, generated once under data/bench (as benchmarks/extract.py does).

With `--synth-old-writer FILE` it also measures `cscl synth` of one wide, short slide (full-width
strips were the old writer's memory) with the writer source FILE (e.g. the pre-issue-14
`git show e11f335:cscl/synthetic/tiff_writer.py > /tmp/old_writer.py`) against today's.

    .venv/bin/python benchmarks/segmentation_memory.py --sizes 10000 20000 40000 --rounds 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slides import BENCH_DIR, bench_slide  # noqa: E402

IMPLS = ("read", "old", "new")  # read: the thumbnail alone (extra = minus the thumbnail)

_CHILD = r"""
import hashlib, json, resource, sys, time
sys.path.insert(0, sys.argv[3])
import numpy as np
from cscl.wsi.readers import open_slide
from cscl.wsi.tissue import TissueMask, TissueParams, segment_tissue
from test_tissue_streaming import reference_segment_rgb
import skimage.filters  # both implementations import it on first use: count it in the baseline

def old_segment_tissue(wsi, params):
    downsample = max(1.0, params.seg_mpp / wsi.mpp)
    thumb = wsi.read_downsampled(downsample)
    mpp = wsi.mpp * downsample
    mask, thr, pen = reference_segment_rgb(thumb, mpp, params)
    return TissueMask(mask, thumb, downsample, mpp, thr, pen)

def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

wsi = open_slide(sys.argv[1])
params = TissueParams()
base = maxrss_mb()
t0, c0 = time.perf_counter(), time.process_time()
if sys.argv[2] == "read":  # the thumbnail only: the reader's share (its tile cache included)
    mask = wsi.read_downsampled(max(1.0, params.seg_mpp / wsi.mpp))[..., 0] > 0
else:
    mask = (old_segment_tissue if sys.argv[2] == "old" else segment_tissue)(wsi, params).mask
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
h, w = mask.shape
digest = "" if sys.argv[2] == "read" else hashlib.sha256(mask.tobytes()).hexdigest()
print(json.dumps(dict(base=base, peak=maxrss_mb(), wall=wall, cpu=cpu, h=h, w=w, digest=digest)))
"""

_SYNTH_CHILD = r"""
import resource, sys, time
if sys.argv[4]:
    import cscl.synthetic.tiff_writer as tw
    exec(compile(open(sys.argv[4]).read(), sys.argv[4], "exec"), tw.__dict__)
from cscl.synthetic import generate_cohort
t0 = time.perf_counter()
generate_cohort(sys.argv[1], n_cases=1, seed=0, stains=("HE",), width=int(sys.argv[2]),
                height=int(sys.argv[3]), workers=1, progress=False)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def measure(slide: Path, impl: str) -> dict:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    tests = str(ROOT / "tests" / "wsi")
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(slide), impl, tests],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["load"] = os.getloadavg()[0]
    return out


def synth_memory(old_writer: str, width: int, height: int, rounds: int) -> None:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    rows = {"old writer": [], "new writer": []}
    with tempfile.TemporaryDirectory(prefix="seg-synth-", dir=BENCH_DIR) as tmp:
        for r in range(rounds):
            for name, src in (("old writer", old_writer), ("new writer", "")):
                out = Path(tmp) / f"{name.split()[0]}{r}"
                res = subprocess.run(
                    [sys.executable, "-c", _SYNTH_CHILD, str(out), str(width), str(height), src],
                    check=True, capture_output=True, text=True, env=env,
                )  # fmt: skip
                wall, peak = (float(v) for v in res.stdout.split()[-2:])
                rows[name].append((wall, peak, os.getloadavg()[0]))
                data = (out / "slides" / "case000_HE.svs").read_bytes()
                rows[name][-1] += (hashlib.sha256(data).hexdigest(),)
    print(
        f"\n`cscl synth` one H&E slide {width}×{height} px, workers=1, {rounds} interleaved rounds"
    )
    print("| writer | wall s (median) | peak RSS MB (max) | load avg | file hash equal |")
    print("|---|---:|---:|---:|---|")
    same = {r[3] for v in rows.values() for r in v}
    for name, v in rows.items():
        print(
            f"| {name} | {statistics.median(x[0] for x in v):.1f} | {max(x[1] for x in v):.0f} "
            f"| {statistics.mean(x[2] for x in v):.2f} | {'yes' if len(same) == 1 else 'NO'} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000, 40000])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--synth-old-writer", default="", help="old tiff_writer.py source to compare")
    ap.add_argument("--synth-width", type=int, default=80000)
    ap.add_argument("--synth-height", type=int, default=512)
    args = ap.parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    slides = {s: bench_slide(s) for s in args.sizes}
    print(f"CPUs {os.cpu_count()} | os.getloadavg() at start {os.getloadavg()}", flush=True)
    runs: dict[tuple[int, str], list[dict]] = {}
    for r in range(args.rounds):
        for size in args.sizes:
            for impl in IMPLS:
                m = measure(slides[size], impl)
                runs.setdefault((size, impl), []).append(m)
                print(
                    f"round {r} {size}² {impl}: peak {m['peak']:.0f} MB (base {m['base']:.0f}), "
                    f"wall {m['wall']:.2f} s, CPU {m['cpu']:.2f} s, load {m['load']:.2f}",
                    flush=True,
                )
    print(
        f"\nsegment_tissue at 8 µm/px, synthetic H&E 0.5 µm/px; os.getloadavg() now {os.getloadavg()}"
    )
    print(
        "| slide | mask px | impl | baseline MB | peak MB | seg MB (peak−base) | extra MB "
        "(−thumb−mask) | extra B/px | wall s | CPU s | mask equal |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for size in args.sizes:
        digests = {m["digest"] for impl in ("old", "new") for m in runs[(size, impl)]}
        for impl in IMPLS:
            ms = runs[(size, impl)]
            px = ms[0]["h"] * ms[0]["w"]
            base = statistics.median(m["base"] for m in ms)
            peak = max(m["peak"] for m in ms)
            seg = max(m["peak"] - m["base"] for m in ms)
            extra = seg - (3 if impl == "read" else 4) * px / 2**20
            print(
                f"| {size}² | {ms[0]['h']}×{ms[0]['w']} | {impl.upper()} | {base:.0f} | {peak:.0f} "
                f"| {seg:.0f} | {extra:.0f} | {extra * 2**20 / px:.1f} "
                f"| {statistics.median(m['wall'] for m in ms):.2f} "
                f"| {statistics.median(m['cpu'] for m in ms):.2f} "
                f"| {'–' if impl == 'read' else 'yes' if len(digests) == 1 else 'NO'} |"
            )
    if args.synth_old_writer:
        synth_memory(args.synth_old_writer, args.synth_width, args.synth_height, args.rounds)


if __name__ == "__main__":
    main()
