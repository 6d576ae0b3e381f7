"""Store extraction with the next slide downloaded during this one (`cscl.shards`, prefetch on)
against one slide after the other (prefetch off): `extract_shard_features` over N slides in a
real S3 API (moto, its own process, over loopback).

Rows, interleaved in rounds (order alternating) in ONE run, load average beside every round:

  loopback off / on        the real download from the loopback server (fast: ~GB/s)
  SIMULATED <X> MB/s off / on
                           the same real download, then a sleep of size / X in the fetching
                           thread: a SIMULATED slower link (this benchmark only — the library
                           has no such knob). It shows the regime of a GPU node, where a 1–3 GB
                           slide takes 5–30 s to arrive, as long as or longer than its forward
                           pass; pick X so a slide's simulated download is about its forward time.

Columns: wall s (the shard), fetch s (download + verify + simulated wait, summed over slides),
waited s (the part the extraction loop blocked on), hidden s = fetch − waited (download that
overlapped another slide's extraction and upload), CPU s (this process and its exited DataLoader
workers; the S3 server's own process is not counted).

    .venv/bin/python benchmarks/store_extract.py --slide data/bench/slide_10000/slides/case000_HE.svs
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from cscl import shards
from cscl.io import storage
from cscl.io.loopback_s3 import LoopbackS3, dummy_credentials
from cscl.wsi.extract import ExtractConfig

REAL_FETCH = shards._fetch_slide


def _cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def simulated_link(mb_per_s: float | None):
    """`_fetch_slide` followed by a sleep of size / mb_per_s (SIMULATED bandwidth), or the real
    one when None. The sleep runs where the download runs: the background thread when on."""
    real = REAL_FETCH
    if not mb_per_s:
        return real

    def fetch(row, work):
        path = real(row, work)
        time.sleep(path.stat().st_size / 1e6 / mb_per_s)
        return path

    return fetch


def run_row(index: pd.DataFrame, cfg: ExtractConfig, prefix: str, sim: float | None) -> dict:
    shards._fetch_slide = simulated_link(sim)
    stats: dict = {}
    with tempfile.TemporaryDirectory(prefix="cscl-bench-scratch-") as scratch:
        c0, t0 = _cpu_s(), time.perf_counter()
        _, rep = shards.extract_shard_features(
            index, cfg, prefix, scratch, log=lambda _: None, stats=stats
        )
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    shards._fetch_slide = REAL_FETCH
    if rep.counts()["extracted"] != len(index):
        raise SystemExit(f"not every slide was extracted: {rep.table}")
    return {"wall": wall, "cpu": cpu, **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slide", required=True, help="a local slide, uploaded N times")
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backbone", default="test_resnet")
    ap.add_argument("--sim-mb-s", type=float, default=8.0, help="SIMULATED link (0: skip)")
    args = ap.parse_args()
    slide = Path(args.slide)
    size_mb = slide.stat().st_size / 1e6

    with dummy_credentials():
        s3 = LoopbackS3(0, ("bench",), own_process=True).start()
        try:
            storage.configure_store(s3.endpoint)
            rows = []
            for k in range(args.slides):
                uri = f"s3://bench/slides/slide{k}.svs"
                storage.upload(slide, uri)
                rows.append(
                    dict(case_id=f"c{k}", stain="HE", slide_id=f"slide{k}", slide_uri=uri,
                         mpp=0.5, etag=storage.stat(uri).etag)
                )  # fmt: skip
            index = pd.DataFrame(rows)
            sims = [None] + ([args.sim_mb_s] if args.sim_mb_s else [])
            modes = [(sim, on) for sim in sims for on in (False, True)]
            results: dict = {m: [] for m in modes}
            loads = []
            n = 0
            for r in range(args.rounds):
                order = modes if r % 2 == 0 else modes[::-1]
                for sim, on in order:
                    cfg = ExtractConfig(backbone=args.backbone, allow_random=True, prefetch=on)
                    n += 1
                    results[(sim, on)].append(run_row(index, cfg, f"s3://bench/run{n}", sim))
                loads.append(os.getloadavg()[0])
        finally:
            s3.stop()

    def name(sim, on):
        link = "loopback" if sim is None else f"SIMULATED {sim:g} MB/s"
        return f"{link} {'on' if on else 'off'}"

    print(f"CPUs {os.cpu_count()} | load average (1 min) after each round: "
          f"{', '.join(f'{x:.2f}' for x in loads)} | os.getloadavg() now {os.getloadavg()}")  # fmt: skip
    print(f"{args.slides} × {slide.name} ({size_mb:.1f} MB) in moto S3 (own process, loopback), "
          f"{args.backbone} random init, medians of {args.rounds} interleaved rounds; "
          "SIMULATED rows add a sleep of size/bandwidth after each real download")  # fmt: skip
    print("| row | wall s | fetch s | waited s | hidden s | slides fetched ahead | CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = {}
    for m in modes:
        rs = results[m]
        med[m] = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        d = med[m]
        print(f"| {name(*m)} | {d['wall']:.2f} | {d['fetch_s']:.2f} | {d['fetch_wait_s']:.2f} | "
              f"{d['fetch_hidden_s']:.2f} | {d['fetched_ahead']:g} | {d['cpu']:.2f} |")  # fmt: skip
    for sim in sims:
        off, on = med[(sim, False)], med[(sim, True)]
        print(f"{name(sim, True).rsplit(' ', 1)[0]}: on/off wall {on['wall'] / off['wall']:.3f} "
              f"(saved {off['wall'] - on['wall']:.2f} s of {off['fetch_s']:.2f} s fetching), "
              f"CPU on/off {on['cpu'] / off['cpu']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
