"""Slide pipeline overlap: `extract_slides` with the next slide prepared in a helper process
(`--prefetch`, the default) against one slide after the other (`--no-prefetch`).

Per slide, preparing (open, tissue segmentation, grid, tile check) is serial work; with the
overlap it runs in a helper process during the previous slide's forward pass. Rows:

  <encoder> off   cfg.prefetch=False: prepare, forward, write, next slide
  <encoder> on    cfg.prefetch=True, helper="eager": slide i+1 prepared while slide i runs
                  (the helper started as soon as a second slide needs work, whatever the
                  cost; the default "auto" starts it only when the preparation ahead is worth it)

for resnet18 (the model dominates: a CPU node) and timm's tiny `test_resnet` (the forward is
nearly free, as on a GPU node: what is left is decoding and the serial preparation). Every row
is a fresh subprocess; rows are interleaved in rounds (order alternating) in ONE run, and the
load average is printed beside every round, because the cores are shared. The slides are one
synthetic slide listed N times under different ids (identical preparation work per slide; the
page cache is equally warm for both modes).

Columns: slides/s and patches/s (wall), CPU-ms/patch (the process, its DataLoader workers and
the helper), prep s = time spent preparing slides (in the parent for `off`; for `on`, the first
slide in the parent plus the helper's), waited s = time the parent blocked on the helper,
hidden s = helper prep − waited (preparation that overlapped a forward pass), helper slides =
slides the helper prepared (it gets slides once it is up; the first is always prepared here),
helper start CPU s = the helper's CPU before its first slide (imports: torch, torchvision).

    .venv/bin/python benchmarks/extract_slides.py --slides 4 --size 10000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slides import bench_slide  # noqa: E402


def _cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)  # joined workers and the helper
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def child(a: argparse.Namespace) -> None:
    import pandas as pd

    from cscl.wsi.encoders import load_encoder
    from cscl.wsi.extract import ExtractConfig, extract_slides

    cfg = ExtractConfig(
        backbone=a.backbone,
        allow_random=True,
        patch_size=a.patch_size,
        target_mpp=a.target_mpp,
        prefetch=a.prefetch == "on",
    )
    enc = load_encoder(cfg.backbone, allow_random=True, device="cpu")
    rows = [
        {"slide_uri": a.slide, "slide_id": f"s{i}", "stain": "HE", "mpp": None}
        for i in range(a.slides)
    ]
    stats: dict = {}
    helper = "eager" if a.prefetch == "on" else "auto"  # on: the overlap itself, always started
    with tempfile.TemporaryDirectory() as out:
        c0, t0 = _cpu_s(), time.perf_counter()
        s = extract_slides(
            pd.DataFrame(rows),
            out,
            cfg,
            encoder=enc,
            show_progress=False,
            stats=stats,
            helper=helper,
        )
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    if not s.ok or len(s.done) != a.slides:
        raise SystemExit(f"extraction failed: {[r.error for r in s.failed]}")
    n = sum(r.n_patches for r in s.done)
    prep = stats["prepare_here_seconds"] + stats["prefetch_prepare_seconds"]
    hidden = stats["prefetch_prepare_seconds"] - stats["prefetch_wait_seconds"]
    print(json.dumps({"n": n, "wall": wall, "cpu": cpu, "prep": prep, "hidden": hidden,
                      "waited": stats["prefetch_wait_seconds"],
                      "startup_cpu": stats["prefetch_startup_cpu_seconds"],
                      "helper_slides": stats["prefetch_slides"],
                      "helpers": stats["prefetch_processes"]}))  # fmt: skip


def run_row(argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", *argv]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--slide", default=None, help="slide file (default: a synthetic --size one)")
    p.add_argument("--size", type=int, default=10000, help="synthetic slide side px")
    p.add_argument("--slides", type=int, default=4, help="slides per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--backbones", default="resnet18,test_resnet")
    p.add_argument("--backbone", default="resnet18", help=argparse.SUPPRESS)
    p.add_argument("--prefetch", choices=["on", "off"], default="on", help=argparse.SUPPRESS)
    p.add_argument("--patch-size", type=int, default=224)
    p.add_argument("--target-mpp", type=float, default=1.0)
    a = p.parse_args()
    if a.child:
        return child(a)
    slide = a.slide or str(bench_slide(a.size))
    common = ["--slide", slide, "--slides", str(a.slides), "--patch-size", str(a.patch_size),
              "--target-mpp", str(a.target_mpp)]  # fmt: skip
    rows = [
        (f"{b} {mode}", ["--backbone", b, "--prefetch", mode, *common])
        for b in a.backbones.split(",")
        for mode in ("off", "on")
    ]
    got: dict[str, list[dict]] = {name: [] for name, _ in rows}
    loads = [os.getloadavg()[0]]
    for r in range(a.rounds):
        for name, argv in rows if r % 2 == 0 else rows[::-1]:
            got[name].append(run_row(argv))
            print(f"  round {r + 1} {name}: {got[name][-1]}", file=sys.stderr, flush=True)
        loads.append(os.getloadavg()[0])

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in got[name])

    print(
        f"CPUs {os.cpu_count()} | load average (1 min) per round: "
        + ", ".join(f"{v:.2f}" for v in loads)
        + f" | os.getloadavg() now {tuple(round(v, 2) for v in os.getloadavg())}"
    )
    print(
        f"{a.slides} × {Path(slide).name} ({a.size}² px synthetic unless --slide), "
        f"{a.patch_size} px @ {a.target_mpp:g} µm/px, medians of {a.rounds} interleaved rounds"
    )
    print("| row | patches | wall s | slides/s | patches/s | CPU-ms/patch | prep s | waited s | hidden s | helper slides | helper start CPU s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, _ in rows:
        n, wall = med(name, "n"), med(name, "wall")
        print(
            f"| {name} | {n:.0f} | {wall:.1f} | {a.slides / wall:.3f} | {n / wall:.1f} | "
            f"{1000 * med(name, 'cpu') / n:.1f} | {med(name, 'prep'):.1f} | "
            f"{med(name, 'waited'):.1f} | {med(name, 'hidden'):.1f} | "
            f"{med(name, 'helper_slides'):.0f} | {med(name, 'startup_cpu'):.1f} |"
        )
    for b in a.backbones.split(","):
        off, on = f"{b} off", f"{b} on"
        print(
            f"{b}: on/off wall {med(on, 'wall') / med(off, 'wall'):.3f} "
            f"(speed-up {med(off, 'wall') / med(on, 'wall'):.2f}×), CPU per patch "
            f"{med(on, 'cpu') / med(off, 'cpu'):.3f}; serial prep off {med(off, 'prep'):.1f} s "
            f"= {100 * med(off, 'prep') / med(off, 'wall'):.0f} % of its wall; hidden on "
            f"{med(on, 'hidden'):.1f} s"
        )


if __name__ == "__main__":
    main()
