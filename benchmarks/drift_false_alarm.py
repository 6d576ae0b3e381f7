"""Drift monitoring figures: false-alarm rate, detection rate, log-reading speed and memory.

    python benchmarks/drift_false_alarm.py [--draws 100] [--records 10000] [--real-draws 3]

1. False alarms: independent unshifted cohorts drawn from the same population as the reference
   (cscl.monitoring.simulate.RecordModel, 512-d embeddings), judged with the default policy —
   the numbers drift.json and the Evidently report show (`compute_drift`, checked equal to the
   report in tests/monitoring/test_stats.py). Also the optimistic variant the brief mentions (bootstrapped
   reference rows + noise) for comparison.
2. Detection: the same for ShiftSpec stain / scanner / composition shifts.
3. Real path: tiny synthetic slides with and without a shift → cscl.wsi QC + features → verdict.
4. Scale: a day partition of N records in a moto S3 server on 127.0.0.1 (and a local dir), read
   and summarised by `read_window`: seconds, records/s, peak traced Python memory, RSS growth.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cscl.monitoring.drift import compute_drift  # noqa: E402
from cscl.monitoring.logs import LogWindow, read_window  # noqa: E402
from cscl.monitoring.policy import load_policy  # noqa: E402
from cscl.monitoring.reference import load_reference, write_reference  # noqa: E402
from cscl.monitoring.schema import flatten_predictions, flatten_qc  # noqa: E402
from cscl.monitoring.simulate import RecordModel, make_records, write_records  # noqa: E402
from cscl.synthetic import ShiftSpec  # noqa: E402

DAY = "2026-11-02"


def window_of(recs, ref) -> LogWindow:
    q = [flatten_qc(r["qc"]) for r in recs]
    return LogWindow(
        model_version="v1",
        since=DAY,
        until=DAY,
        request_ids=[r["request_id"] for r in recs],
        slide_ids=[r["slide_id"] for r in recs],
        embeddings=np.asarray([r["embedding"] for r in recs], dtype=np.float32),
        qc_numeric=np.asarray([v for v, _ in q], dtype=np.float32),
        vendors=[v for _, v in q],
        predictions=np.asarray(
            [flatten_predictions(r["predictions"], ref.pred_columns) for r in recs], np.float32
        ),
        pred_columns=ref.pred_columns,
    )


def bootstrap_window(ref, n, seed) -> LogWindow:
    """Rows of the reference set resampled, plus 10 % of each column's spread as noise."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ref), n)

    def jitter(a):
        a = np.asarray(a, np.float32)[idx]
        return a + 0.1 * a.std(0, keepdims=True) * rng.normal(size=a.shape).astype(np.float32)

    qnum = ref.qc.drop(columns=["qc_vendor"]).to_numpy(np.float32)
    return LogWindow(
        model_version="v1",
        since=DAY,
        until=DAY,
        request_ids=[f"b{i}" for i in range(n)],
        slide_ids=[f"b{i}" for i in range(n)],
        embeddings=jitter(ref.embeddings),
        qc_numeric=np.where(qnum.std(0) > 0, jitter(qnum), qnum[idx]),
        vendors=list(ref.qc["qc_vendor"].to_numpy()[idx]),
        predictions=jitter(ref.predictions.to_numpy(np.float32)),
        pred_columns=ref.pred_columns,
    )


def rate(ref, policy, windows) -> tuple[float, dict]:
    hits, total, by_signal = 0, 0, {}
    for w in windows:
        total += 1
        comp = compute_drift(ref, w, policy)
        drifted = [n for n, s in comp.signals.items() if s.status == "drift"]
        hits += bool(drifted)
        for n in drifted:
            by_signal[n] = by_signal.get(n, 0) + 1
    return hits / max(1, total), by_signal


def false_alarms(args, tmp: Path) -> None:
    model = RecordModel(dim=512, seed=0)
    ref_c = model.sample(args.reference, seed=1)
    write_reference(tmp / "b", ref_c["embeddings"], ref_c["predictions"], ref_c["qc"], "v1")
    ref = load_reference(str(tmp / "b"))
    policy = load_policy()
    print(f"\n== false alarms (reference {len(ref)} slides, 512-d, default policy) ==")
    for n in (30, 100, 300):
        t = time.perf_counter()
        fresh = (window_of(make_records(model.sample(n, 1000 + s), "v1", DAY), ref)
                 for s in range(args.draws))  # fmt: skip
        r, sig = rate(ref, policy, fresh)
        dt = time.perf_counter() - t
        boot = (bootstrap_window(ref, n, s) for s in range(args.draws))
        rb, _ = rate(ref, policy, boot)
        print(f"n_current={n:4d}: false-alarm rate {r:.3f} over {args.draws} fresh draws "
              f"(by signal {sig or '{}'}), {rb:.3f} with bootstrapped reference rows; "
              f"{dt / args.draws * 1000:.0f} ms/draw")  # fmt: skip
    print("\n== detection rate (n_current=60) ==")
    for name, shift in [
        ("stain 0.3", ShiftSpec(stain=0.3)),
        ("stain 0.6", ShiftSpec(stain=0.6)),
        ("scanner 0.3", ShiftSpec(scanner=0.3)),
        ("scanner 0.6", ShiftSpec(scanner=0.6)),
        ("composition 0.3", ShiftSpec(composition=0.3)),
        ("composition 0.6", ShiftSpec(composition=0.6)),
    ]:
        ws = (window_of(make_records(model.sample(60, 2000 + s, shift), "v1", DAY), ref)
              for s in range(min(args.draws, 20)))  # fmt: skip
        r, sig = rate(ref, policy, ws)
        print(f"{name:16s}: flagged {r:.2f} (by signal {sig})")


def real_path(args, tmp: Path) -> None:
    if args.real_draws <= 0:
        return
    from cscl.monitoring.simulate import slide_records
    from cscl.synthetic.testing import tiny_cohort

    size = dict(stains=("HE",), width=1200, height=900)
    n = 8
    policy = load_policy({"min_samples": n, "min_reference": n,
                          "signals": {"embedding": {"pca_components": 4}}})  # fmt: skip
    t = time.perf_counter()
    ref_recs = slide_records(str(tiny_cohort(tmp / "r", n, seed=0, **size)), "v1", day=DAY)
    write_reference(tmp / "rb", [r["embedding"] for r in ref_recs],
                    [r["predictions"] for r in ref_recs], [r["qc"] for r in ref_recs], "v1")  # fmt: skip
    ref = load_reference(str(tmp / "rb"))
    alarms = hits = 0
    for s in range(args.real_draws):
        same = slide_records(str(tiny_cohort(tmp / f"s{s}", n, seed=10 + s, **size)), "v1", day=DAY)
        alarms += any(x.status == "drift" for x in
                      compute_drift(ref, window_of(same, ref), policy).signals.values())  # fmt: skip
        sh = tiny_cohort(
            tmp / f"h{s}", n, seed=10 + s, shift=ShiftSpec(stain=0.8, scanner=0.5), **size
        )
        shifted = slide_records(str(sh), "v1", day=DAY)
        hits += any(x.status == "drift" for x in
                    compute_drift(ref, window_of(shifted, ref), policy).signals.values())  # fmt: skip
    print(f"\n== real slide path ({n} slides/side, {args.real_draws} draws, "
          f"{time.perf_counter() - t:.0f} s) ==")  # fmt: skip
    print(f"unshifted flagged {alarms}/{args.real_draws}; stain+scanner shift flagged "
          f"{hits}/{args.real_draws}")  # fmt: skip


def _moto_process() -> tuple[subprocess.Popen, str]:
    """moto in its own process, like a real S3 service (an in-process server shares our GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ep = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, ep
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def scale(args, tmp: Path) -> None:
    from cscl.io.storage import s3_client

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    proc, ep = _moto_process()
    try:
        s3_client(ep).create_bucket(Bucket="logs")
        model = RecordModel(dim=512, seed=0)
        ref_c = model.sample(200, seed=1)
        write_reference(tmp / "b2", ref_c["embeddings"], ref_c["predictions"], ref_c["qc"], "v1")
        ref = load_reference(str(tmp / "b2"))
        t = time.perf_counter()
        for start in range(0, args.records, 2000):
            k = min(2000, args.records - start)
            recs = make_records(model.sample(k, seed=5000 + start), "v1", DAY, seed=start)
            write_records("s3://logs/p", recs, endpoint_url=ep)
            write_records(str(tmp / "local"), recs)
            del recs
        size = sum(p.stat().st_size for p in (tmp / "local").rglob("*.json"))
        print(f"\n== log reading: {args.records} records (512-d embeddings, "
              f"{size / 2**20:.0f} MiB of JSON) in one day partition; written in "
              f"{time.perf_counter() - t:.0f} s ==")  # fmt: skip
        kw = dict(pred_columns=ref.pred_columns, embedding_dim=512)
        for name, prefix, extra in [("moto S3", "s3://logs/p", {"endpoint_url": ep}),
                                    ("local dir", str(tmp / "local"), {})]:  # fmt: skip
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t = time.perf_counter()
            w = read_window(prefix, "v1", DAY, DAY, **kw, **extra)
            dt = time.perf_counter() - t
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            arrays = w.embeddings.nbytes + w.qc_numeric.nbytes + w.predictions.nbytes
            print(f"{name:9s}: {len(w)} records in {dt:.1f} s ({len(w) / dt:.0f} rec/s); kept "
                  f"arrays {arrays / 2**20:.1f} MiB; max RSS grew {(rss1 - rss0) / 1024:.0f} MiB")  # fmt: skip
            del w
        tracemalloc.start()
        w = read_window(str(tmp / "local"), "v1", DAY, DAY, **kw)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"peak Python memory while reading (tracemalloc, local): {peak / 2**20:.0f} MiB "
              f"for {size / 2**20:.0f} MiB of JSON")  # fmt: skip
        t = time.perf_counter()
        comp = compute_drift(ref, w, load_policy())
        print(
            f"drift numbers of the 10k window in {time.perf_counter() - t:.1f} s: "
            + ", ".join(f"{n}={s.status}" for n, s in comp.signals.items())
        )
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--reference", type=int, default=200)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--real-draws", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], help="false-alarms real scale")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cscl-drift-bench-") as d:
        tmp = Path(d)
        if "false-alarms" not in args.skip:
            false_alarms(args, tmp)
        if "real" not in args.skip:
            real_path(args, tmp)
        if "scale" not in args.skip:
            scale(args, tmp)


if __name__ == "__main__":
    main()
