"""Serving latency and throughput: the handler in-process against the same package served.

What `cscl package` ships (its CLI, its defaults) is served by real TorchServe instances, one per
batch delay compared (the shipped default among them; started side by side), and the SAME
handler (cscl_platform/serving/handler.py: parse → Predictor.run → respond) is also called
in-process, so served − in-process is TorchServe's frontend, IPC and batching and nothing else.
Every configuration runs in every round, interleaved (the cores are shared: compare ratios).

One run prints:
  (a) per configuration: p50/p95 latency at concurrency 1, throughput and p50 at concurrency 8
  (b) served p50 / in-process p50 at c=1 for each batch delay
  (c) end-to-end latency of one whole synthetic slide (slide_uri), served and in-process
  (d) a bounded load on the shipped package (8 clients, mixed good/bad requests): failures
  (e) the baseline: what `cscl package` shipped at --baseline-rev (before issue 14), packaged and
      served with the code of that revision (git archive), in the same rounds
  (f) the shipped package ALONE on the box, before the other instances start (every idle
      TorchServe still takes a share of 2 cores): the absolute p50 the target is about
Targets: served p50 ≤ 20 ms at c=1 (alone), c=8 throughput ≥ 1.5× the baseline, zero failures.

The model is a random-init slide encoder (small ABMIL by default, as `cscl pretrain --small`)
on 512-d patch features of a random-init resnet18; feature files hold --patches patches.

    .venv/bin/python benchmarks/serve.py                 # full run (a few minutes)
    .venv/bin/python benchmarks/serve.py --quick         # fewer requests, 10 s load
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONE, DIM, PATCH, MPP = "resnet18", 512, 224, 1.0
WARM_UP = 50  # requests per configuration before timing: the JVM frontend compiles its hot paths


def pct(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1000
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


def extract_config():
    from cscl.wsi.extract import ExtractConfig

    return ExtractConfig(
        backbone=BACKBONE, allow_random=True, patch_size=PATCH, target_mpp=MPP, num_workers=0,
        precision="fp32",  # the synthetic feature files stand for fp32 features
    )  # fmt: skip


def build(root: Path, n_patches: int, n_cases: int = 16, small: bool = False) -> dict:
    """Feature files, a random-init run, embeddings, labels → package_model (what `cscl package`
    runs) → bundle + .mar."""
    import pandas as pd
    import torch

    from cscl.embeddings import write_embeddings
    from cscl.features import SlideFeatures, read_features, write_features
    from cscl.models import create_model
    from cscl.train.checkpoint import load_trained, save_run
    from cscl.wsi.extract import extractor_hash

    rng = np.random.default_rng(0)
    ehash = extractor_hash(extract_config(), "random-seed0")
    fdir = root / "features"
    ids = [f"case{i:03d}" for i in range(n_cases)]
    for cid in ids:
        qc = {"tissue_area_mm2": 50.0, "mpp": 0.5, "od_mean": [0.2, 0.3, 0.1],
              "od_std": [0.05, 0.05, 0.03], "vendor": "aperio"}  # fmt: skip
        sf = SlideFeatures(
            features=rng.normal(size=(n_patches, DIM)).astype(np.float32),
            coords=(rng.integers(0, 200, size=(n_patches, 2)) * 448).astype(np.int64),
            slide_id=f"{cid}_HE",
            stain="HE",
            extractor_hash=ehash,
            encoder=BACKBONE,
            coord_attrs={
                "patch_size": PATCH,
                "patch_size_level0": 448,
                "target_mpp": MPP,
                "mpp_level0": 0.5,
            },  # fmt: skip
            extra={"random_init": True, "qc": qc},
        )
        write_features(fdir / f"{cid}_HE.h5", sf)
    torch.manual_seed(0)
    abmil = (
        dict(hidden=128, n_heads=2, head_dim=64, attn_hidden=64, embed_dim=64, token_dim=32)
        if small
        else {}
    )
    mc = dict(in_dim=DIM, n_stains=5, use_fusion=True, use_stain_embed=True, abmil=abmil)
    enc = create_model("slide_encoder", **mc)
    cfg = {"kind": "cscl", "stage": "slide", "input_dim": DIM, "he_id": 0,
           "stains": ["HE", "HER2", "KI67", "ER", "PGR"],
           "slide_encoder": {"name": "slide_encoder", "config": mc},
           "data": {"features_dir": str(fdir), "extractor_hash": ehash, "encoder": BACKBONE,
                    "fingerprint": "bench"}}  # fmt: skip
    run = save_run(root / "run", cfg, {"slide_encoder": enc})
    model = load_trained(run)
    X = np.stack([model.embed(read_features(fdir / f"{c}_HE.h5").features)[0] for c in ids])
    meta = pd.DataFrame({"case_id": ids, "slide_id": [f"{c}_HE" for c in ids], "stain": "HE",
                         "model_version": model.model_version})  # fmt: skip
    write_embeddings(root / "emb.parquet", meta, X)
    pd.DataFrame(
        {
            "case_id": ids,
            "er_status": ["positive", "negative"] * (n_cases // 2),
            "subtype": ["LumA", "LumB", "HER2+", "TNBC"] * (n_cases // 4),
            "os_time": rng.uniform(5, 100, n_cases).round(1),
            "os_event": [1, 0] * (n_cases // 2),
        }
    ).to_csv(root / "labels.csv", index=False)
    return {"run": run, "features": fdir, "ids": ids, "root": root}


BASELINE_REV = "e5cdfff"  # main just before issue 14's serving changes (fusion, uploads, delay)


def baseline_source(rev: str, dest: Path) -> Path:
    """The project's code at `rev` (git archive of this checkout), to package and serve the
    baseline with the code of that time."""
    dest.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar.stdout, check=True)
    return dest


def baseline_inputs(built: dict, src: Path) -> Path:
    """A copy of the run and its feature files under the extractor hash the baseline's code
    computes for the same settings (the hash's recipe changed since), as its `cscl extract`
    would have written them. Returns the run directory."""
    import shutil

    import h5py

    code = (
        "from cscl.wsi.extract import ExtractConfig, extractor_hash; print(extractor_hash("
        f"ExtractConfig(backbone={BACKBONE!r}, allow_random=True, patch_size={PATCH}, "
        f"target_mpp={MPP}, num_workers=0), 'random-seed0'))"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    old_hash = subprocess.run([sys.executable, "-c", code], env=env, cwd=src, check=True,
                              capture_output=True, text=True).stdout.split()[-1]  # fmt: skip
    root = built["root"]
    fdir = shutil.copytree(built["features"], root / "baseline-features")
    for f in fdir.glob("*.h5"):
        with h5py.File(f, "r+") as h:
            h.attrs["extractor_hash"] = old_hash
    run = shutil.copytree(built["run"], root / "baseline-run")
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"].update(features_dir=str(fdir), extractor_hash=old_hash)
    (run / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return run


def package_baseline(built: dict, src: Path) -> Path:
    """`cscl package` of the baseline's code, with ITS defaults, in a subprocess whose imports
    resolve to `src` first."""
    root = built["root"]
    out = root / "models-baseline"
    run = baseline_inputs(built, src)
    argv = [sys.executable, "-m", "cscl", "package", "--model", str(run),
            "--out", str(out), "--labels", str(root / "labels.csv"),
            "--embeddings", str(root / "emb.parquet"), "--tasks", "er_status,subtype,os",
            "--version", "bench", "--n-iter", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(src)}
    # cwd = src: `python -m` puts the working directory first on sys.path
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=src)
    if done.returncode != 0:
        raise SystemExit(f"baseline cscl package failed:\n{done.stdout}\n{done.stderr}")
    return out


def package(built: dict, delay: int | None) -> Path:
    """`cscl package` through its CLI, as shipped; `delay` None keeps its default batch delay.
    Returns the model store holding cscl.mar."""
    from cscl.cli import main as cli

    root = built["root"]
    out = root / f"models-{'default' if delay is None else delay}"
    argv = ["package", "--model", str(built["run"]), "--out", str(out),
            "--labels", str(root / "labels.csv"), "--embeddings", str(root / "emb.parquet"),
            "--tasks", "er_status,subtype,os", "--version", "bench", "--n-iter", "2"]  # fmt: skip
    if delay is not None:
        argv += ["--max-batch-delay", str(delay)]
    if cli(argv) != 0:
        raise SystemExit(f"cscl package failed: {argv}")
    return out


class InProcessContext:
    """What the handler reads from TorchServe's context, for calling it in this process."""

    def __init__(self, model_dir: Path):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.model_yaml_config: dict = {}
        self.metrics = None

    def get_request_id(self, idx: int) -> str:
        return f"in-process-{idx}"

    def set_response_status(self, code: int, phrase: str, idx: int) -> None:
        if code >= 400:
            raise RuntimeError(f"in-process request {idx} answered {code} {phrase}")


def timed_calls(fn, payloads: list, concurrency: int) -> tuple[list[float], float, int]:
    """(latencies, wall seconds, failures) of calling fn on every payload."""
    lat: list[float] = []
    fails = 0
    lock = threading.Lock()

    def one(p):
        nonlocal fails
        t = time.perf_counter()
        try:
            fn(p)
        except Exception:
            with lock:
                fails += 1
            return
        with lock:
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, payloads))
    return lat, time.perf_counter() - t0, fails


def load_test(client_factory, good: list[bytes], seconds: float, clients: int) -> dict:
    """`clients` threads for `seconds`; 1 in 10 requests is bad on purpose (must get a 4xx)."""
    from cscl_platform.serving.client import ServingError

    stop = time.monotonic() + seconds
    counts = {"ok": 0, "rejected_4xx": 0, "failed": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def worker(k: int):
        c = client_factory()
        i = 0
        while time.monotonic() < stop:
            bad = i % 10 == 9
            body = b'{"unknown": 1}' if bad else good[(k + i) % len(good)]
            try:
                c.predict_features_bytes(body)
                key = "failed" if bad else "ok"
            except ServingError as exc:
                key = "rejected_4xx" if bad and exc.status == 400 else "failed"
                if key == "failed":
                    with lock:
                        errors.append(str(exc)[:200])
            except Exception as exc:
                key = "failed"
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
            with lock:
                counts[key] += 1
            i += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(counts.values())
    return {**counts, "requests": total, "seconds": round(wall, 1),
            "throughput_rps": round(total / wall, 1), "first_errors": errors[:5]}  # fmt: skip


def served_call(inst, swap: dict | None = None):
    """A function posting a feature file to `inst`, one client per calling thread; `swap` maps
    a body to the one this instance must get instead (the baseline's own extractor hash)."""
    from cscl_platform.serving.client import ServingClient

    local, swap = threading.local(), swap or {}

    def call(body: bytes) -> dict:
        if not hasattr(local, "c"):
            local.c = ServingClient(inst.inference_url, "cscl", key_file=inst.key_file)
        return local.c.predict_features_bytes(swap.get(body, body))

    return call


def alone(inst, bodies: list[bytes], args) -> dict:
    """c=1 and c=8 on the shipped package while it is the only TorchServe on the box.

    Side by side, every idle instance (a JVM and a Python worker each) still takes its share of
    2 cores: the interleaved table is for ratios, this row answers "p50 on this box"."""

    call = served_call(inst)
    for i in range(WARM_UP):
        call(bodies[i % len(bodies)])
    n = args.requests * args.rounds
    lat1, _, f1 = timed_calls(call, [bodies[i % len(bodies)] for i in range(n)], 1)
    lat8, w8, f8 = timed_calls(call, [bodies[i % len(bodies)] for i in range(n)], 8)
    return {"c1": pct(lat1), "c8": {**pct(lat8), "throughput_rps": round(len(lat8) / w8, 1)},
            "failures": f1 + f8, "load_average": round(os.getloadavg()[0], 2)}  # fmt: skip


def shipped_delay() -> int:
    """The batch delay `cscl package` writes when not told otherwise (read from its CLI)."""
    import argparse as ap

    from cscl_platform.commands import package as cmd

    parser = ap.ArgumentParser()
    cmd.add_arguments(parser)
    return int(parser.parse_args(["--model", "x", "--out", "y"]).max_batch_delay)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patches", type=int, default=500, help="patches per feature file (500)")
    ap.add_argument("--requests", type=int, default=40, help="requests per config, level, round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delays", default="1,5,20", help="batch delays (ms) compared")
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--slide-size", type=int, default=2048, help="synthetic slide side in px")
    ap.add_argument(
        "--abmil", choices=("small", "default"), default="small", help="slide encoder size"
    )
    ap.add_argument(
        "--baseline-rev",
        default=BASELINE_REV,
        help=f"also serve what `cscl package` shipped at this git revision, with the code of that "
        f"time ({BASELINE_REV}: before issue 14); '' to skip",
    )
    ap.add_argument("--quick", action="store_true", help="20 requests, 2 rounds, 10 s load")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.rounds, args.load_seconds = 20, 2, 10.0

    from cscl.synthetic import generate_cohort
    from cscl_platform.serving import handler as handler_mod
    from cscl_platform.serving.client import ServingClient
    from cscl_platform.serving.server import start_torchserve

    default = shipped_delay()
    delays = sorted({default, *(int(d) for d in args.delays.split(","))})
    res: dict = {"config": {"patches": args.patches, "dim": DIM, "backbone": BACKBONE,
                            "abmil": args.abmil, "requests": args.requests, "rounds": args.rounds,
                            "shipped_delay_ms": default, "delays": delays}}  # fmt: skip
    instances: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="cscl-bench-serve-") as d:
        root = Path(d)
        t = time.perf_counter()
        built = build(root, args.patches, small=args.abmil == "small")
        stores = {dl: package(built, None if dl == default else dl) for dl in delays}
        base_src = (
            baseline_source(args.baseline_rev, root / "baseline") if args.baseline_rev else None
        )
        base_store = package_baseline(built, base_src) if base_src else None
        m = generate_cohort(root / "slide", n_cases=1, seed=3, stains=("HE",),
                            width=args.slide_size, height=args.slide_size * 3 // 4,
                            workers=1, progress=False)  # fmt: skip
        slide = (m.parent / "slides" / "case000_HE.svs").resolve()
        print(f"setup (package × {len(delays)} + slide) {time.perf_counter() - t:.1f}s", flush=True)
        files = [built["features"] / f"{c}_HE.h5" for c in built["ids"]]
        bodies = [f.read_bytes() for f in files]
        res["config"]["upload_bytes"] = len(bodies[0])

        # the handler in this process, exactly as a TorchServe worker runs it
        os.environ["CSCL_ALLOWED_PREFIXES"] = str(slide.parent)
        h = handler_mod.CsclHandler()
        ctx = InProcessContext(stores[default] / "cscl")
        h.initialize(ctx)
        lock = threading.Lock()

        def in_process(body):
            with lock:  # one worker: requests are served one batch at a time
                return h.handle([{"body": body}], ctx)[0]

        try:
            t = time.perf_counter()
            for dl in [default, *(d for d in delays if d != default)]:
                instances[f"served, delay {dl} ms"] = start_torchserve(
                    stores[dl], {"cscl": "cscl.mar"},
                    env={"CSCL_ALLOWED_PREFIXES": str(slide.parent)}, ready_timeout=300,
                )  # fmt: skip
                if dl == default:
                    res["shipped_alone"] = alone(instances[f"served, delay {dl} ms"], bodies, args)
            if base_store is not None:
                instances[f"served, {args.baseline_rev} (before issue 14)"] = start_torchserve(
                    base_store, {"cscl": "cscl.mar"},
                    env={"CSCL_ALLOWED_PREFIXES": str(slide.parent), "PYTHONPATH": str(base_src)},
                    ready_timeout=300,
                )  # fmt: skip
            res["server_start_s"] = round(time.perf_counter() - t, 1)
            calls = {"in-process handler": in_process}
            # the baseline gets the same features under its own extractor hash
            base_bodies = (
                dict(zip(bodies, (f.read_bytes() for f in sorted((root / "baseline-features")
                                                                 .glob("*.h5"))), strict=True))
                if base_store is not None
                else {}
            )  # fmt: skip
            for label, inst in instances.items():
                swap = base_bodies if label.endswith("(before issue 14)") else {}
                calls[label] = served_call(inst, swap)
            for fn in calls.values():
                for i in range(WARM_UP):
                    fn(bodies[i % len(bodies)])
            lat = {(k, c): [] for k in calls for c in (1, 8)}
            wall = {(k, c): 0.0 for k in calls for c in (1, 8)}
            fails = {k: 0 for k in calls}
            loads = [os.getloadavg()]
            for r in range(args.rounds):
                for label, fn in calls.items():
                    for conc in (1, 8):
                        payload = [bodies[(r + i) % len(bodies)] for i in range(args.requests)]
                        got, w, f = timed_calls(fn, payload, conc)
                        lat[label, conc] += got
                        wall[label, conc] += w
                        fails[label] += f
                loads.append(os.getloadavg())
                print(f"round {r + 1}/{args.rounds}, load average {loads[-1][0]:.2f}", flush=True)
            for label in calls:
                n8 = len(lat[label, 8])
                res[label] = {
                    "c1": pct(lat[label, 1]),
                    "c8": {**pct(lat[label, 8]),
                           "throughput_rps": round(n8 / wall[label, 8], 1)},
                    "failures": fails[label],
                }  # fmt: skip
            base = res["in-process handler"]["c1"]["p50"]
            for label in instances:
                res[label]["c1_p50_over_in_process"] = round(res[label]["c1"]["p50"] / base, 2)
            res["load_average_per_round"] = [round(x[0], 2) for x in loads]

            shipped = instances[f"served, delay {default} ms"]
            t = time.perf_counter()
            h.predictor.predict_slide(str(slide))  # backbone loaded at initialize; warm caches
            t = time.perf_counter()
            h.predictor.predict_slide(str(slide))
            res["in_process_slide_e2e_s"] = round(time.perf_counter() - t, 2)
            c = ServingClient(shipped.inference_url, "cscl", key_file=shipped.key_file)
            c.predict_slide_uri(str(slide))
            t = time.perf_counter()
            out = c.predict_slide_uri(str(slide))
            res["served_slide_e2e_s"] = round(time.perf_counter() - t, 2)
            res["slide_patches"] = out["n_patches"]

            def mk():
                return ServingClient(shipped.inference_url, "cscl", key_file=shipped.key_file)

            res["load"] = load_test(mk, bodies, args.load_seconds, 8)
            res["worker_alive_after_load"] = shipped.model_ready("cscl")
        finally:
            for inst in instances.values():
                inst.stop()
    print_table(res, list(calls), default)
    served_default = res[f"served, delay {default} ms"]
    res["targets"] = {
        "p50_c1_at_most_20ms": res["shipped_alone"]["c1"]["p50"] <= 20,
        "zero_failures": res["load"]["failed"] == 0 and all(res[k]["failures"] == 0 for k in calls),
    }
    base = next((k for k in calls if k.endswith("(before issue 14)")), None)
    if base is not None:
        gain = served_default["c8"]["throughput_rps"] / res[base]["c8"]["throughput_rps"]
        faster = res[base]["c1"]["p50"] / served_default["c1"]["p50"]
        res["vs_baseline"] = {
            "c8_throughput_ratio": round(gain, 2),
            "c1_p50_speedup": round(faster, 2),
        }
        res["targets"]["c8_throughput_at_least_1.5x_baseline"] = gain >= 1.5
        print(
            f"shipped vs {base}: c=8 throughput {gain:.2f}× (target ≥ 1.5), "
            f"c=1 p50 {faster:.2f}× faster"
        )
    print(json.dumps({k: res[k] for k in ("targets", "load", "config")}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def print_table(res: dict, labels: list[str], default: int) -> None:
    print()
    print(
        f"CPUs {len(os.sched_getaffinity(0))} | load average per round "
        f"{res['load_average_per_round']} | os.getloadavg() now "
        f"{tuple(round(v, 2) for v in os.getloadavg())} | {res['config']['patches']} patches × "
        f"{DIM} per upload ({res['config']['upload_bytes']} B) | shipped delay {default} ms"
    )
    print("| configuration | c=1 p50 ms | c=1 p95 ms | vs in-process | c=8 p50 ms | c=8 req/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in labels:
        r = res[label]
        ratio = r.get("c1_p50_over_in_process")
        print(
            f"| {label}{' (shipped)' if label == f'served, delay {default} ms' else ''} | "
            f"{r['c1']['p50']} | {r['c1']['p95']} | {'' if ratio is None else f'{ratio}×'} | "
            f"{r['c8']['p50']} | {r['c8']['throughput_rps']} |"
        )
    a = res["shipped_alone"]
    print(
        f"shipped package ALONE on the box (before the others started; load {a['load_average']}):"
        f" c=1 p50 {a['c1']['p50']} ms, p95 {a['c1']['p95']} ms; c=8 p50 {a['c8']['p50']} ms, "
        f"{a['c8']['throughput_rps']} req/s (target: c=1 p50 ≤ 20 ms)"
    )
    print(
        f"whole slide ({res['slide_patches']} patches): in-process {res['in_process_slide_e2e_s']} s,"
        f" served {res['served_slide_e2e_s']} s | load {res['load']['seconds']} s: "
        f"{res['load']['ok']} ok, {res['load']['rejected_4xx']} rejected (bad on purpose), "
        f"{res['load']['failed']} failed"
    )


if __name__ == "__main__":
    sys.exit(main())
