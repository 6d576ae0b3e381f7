"""Serving latency, throughput and robustness against one real TorchServe instance.

One run prints:
  (a) feature-file uploads at concurrency 1 and 8: p50/p95/p99 latency, throughput
  (b) the same model in-process (read_features + Predictor.predict_features): p50/p95/p99
  (c) overhead ratios: served p50 / in-process p50 at c=1, and at c=8 the served time per request
      (1 / throughput) / in-process time per request
  (d) end-to-end latency of one whole synthetic slide (slide_uri: tissue → patches → backbone →
      slide encoder → heads), served and in-process
  (e) a bounded load (default 60 s, 8 clients, mixed good/bad requests) with the count of
      failed requests (a bad request answered 4xx is not a failure; anything else unexpected is)
Targets: p50 < 20 ms at c=1, overhead < 2 at c=8, zero failures.

The model is a random-init slide encoder (small ABMIL by default, as `cscl pretrain --small`) on 512-d patch features of a
random-init resnet18 (224 px patches at 1 µm/px), packaged with `cscl package` exactly as in
production; feature files hold --patches patches.

    .venv/bin/python benchmarks/serve.py                 # full run (a few minutes)
    .venv/bin/python benchmarks/serve.py --quick         # 10 s load, fewer requests
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONE, DIM, PATCH, MPP = "resnet18", 512, 224, 1.0


def pct(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1000
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


def extract_config():
    from cscl.wsi.extract import ExtractConfig

    return ExtractConfig(
        backbone=BACKBONE, allow_random=True, patch_size=PATCH, target_mpp=MPP, num_workers=0
    )


def build(root: Path, n_patches: int, n_cases: int = 16, small: bool = False) -> dict:
    """Feature files, a random-init run, embeddings, labels → package_model (what `cscl package`
    runs) → bundle + .mar."""
    import pandas as pd
    import torch

    from cscl.embeddings import write_embeddings
    from cscl.features import SlideFeatures, read_features, write_features
    from cscl.models import create_model
    from cscl.packaging import BundleSpec
    from cscl.train.checkpoint import load_trained, save_run
    from cscl.wsi.extract import extractor_hash
    from cscl_platform.serving.package import package_model

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
    out = root / "models"
    spec = BundleSpec(labels=str(root / "labels.csv"), embeddings=root / "emb.parquet",
                      tasks="er_status,subtype,os", version="bench", n_iter=2)  # fmt: skip
    package_model(run, out, spec, max_batch_delay=5)
    return {"store": out, "bundle": out / "cscl", "features": fdir, "ids": ids}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patches", type=int, default=500, help="patches per feature file (500)")
    ap.add_argument("--requests", type=int, default=100, help="requests per concurrency level")
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--slide-size", type=int, default=2048, help="synthetic slide side in px")
    ap.add_argument(
        "--abmil", choices=("small", "default"), default="small", help="slide encoder size"
    )
    ap.add_argument("--quick", action="store_true", help="30 requests, 10 s load")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, served and in-process")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.load_seconds = 30, 10.0

    import torch

    from cscl.features import read_features
    from cscl.inference import Predictor
    from cscl.synthetic import generate_cohort
    from cscl_platform.serving.client import ServingClient
    from cscl_platform.serving.server import start_torchserve

    torch.set_num_threads(args.threads)
    res: dict = {"config": {"patches": args.patches, "dim": DIM, "backbone": BACKBONE,
                            "abmil": args.abmil,
                            "requests": args.requests, "threads": args.threads}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cscl-bench-serve-") as d:
        root = Path(d)
        t = time.perf_counter()
        built = build(root, args.patches, small=args.abmil == "small")
        m = generate_cohort(root / "slide", n_cases=1, seed=3, stains=("HE",),
                            width=args.slide_size, height=args.slide_size * 3 // 4,
                            workers=1, progress=False)  # fmt: skip
        slide = (m.parent / "slides" / "case000_HE.svs").resolve()
        print(f"setup (package + slide) {time.perf_counter() - t:.1f}s", flush=True)
        files = [built["features"] / f"{c}_HE.h5" for c in built["ids"]]
        bodies = [f.read_bytes() for f in files]
        res["config"]["upload_bytes"] = len(bodies[0])

        # (b) in-process
        pred = Predictor(built["bundle"])
        for f in files[:3]:
            pred.predict_features(read_features(f))
        payload = [files[i % len(files)] for i in range(args.requests)]
        lat, wall, _ = timed_calls(lambda f: pred.predict_features(read_features(f)), payload, 1)
        res["in_process"] = {**pct(lat), "per_request_ms": round(wall / len(lat) * 1000, 2)}
        pred.predict_slide(str(slide))  # loads the backbone once
        t = time.perf_counter()
        pred.predict_slide(str(slide))
        res["in_process"]["slide_e2e_s"] = round(time.perf_counter() - t, 2)
        print("in-process", res["in_process"], flush=True)

        t = time.perf_counter()
        inst = start_torchserve(
            built["store"],
            {"cscl": "cscl.mar"},
            env={
                "CSCL_ALLOWED_PREFIXES": str(slide.parent),
                "CSCL_TORCH_THREADS": str(args.threads),
            },
            ready_timeout=300,
        )
        res["server_start_s"] = round(time.perf_counter() - t, 1)
        try:

            def mk():
                return ServingClient(inst.inference_url, "cscl", key_file=inst.key_file)

            local = threading.local()

            def call(body):
                if not hasattr(local, "c"):
                    local.c = mk()
                return local.c.predict_features_bytes(body)

            for b in bodies[:4]:
                call(b)  # warm-up
            for conc in (1, 8):
                payload = [bodies[i % len(bodies)] for i in range(args.requests)]
                lat, wall, fails = timed_calls(call, payload, conc)
                res[f"served_c{conc}"] = {**pct(lat), "throughput_rps": round(len(lat) / wall, 1),
                                          "failures": fails}  # fmt: skip
                print(f"served c={conc}", res[f"served_c{conc}"], flush=True)
            ip = res["in_process"]
            res["overhead_c1_p50"] = round(res["served_c1"]["p50"] / ip["p50"], 2)
            per_req_c8 = 1000 / res["served_c8"]["throughput_rps"]
            res["overhead_c8_per_request"] = round(per_req_c8 / ip["per_request_ms"], 2)
            c = mk()
            c.predict_slide_uri(str(slide))  # the worker loaded the backbone at start; warm caches
            t = time.perf_counter()
            out = c.predict_slide_uri(str(slide))
            res["served_slide_e2e_s"] = round(time.perf_counter() - t, 2)
            res["slide_patches"] = out["n_patches"]
            res["slide_timing_ms"] = out.get("timing_ms")
            print("slide e2e", res["served_slide_e2e_s"], "s", out["n_patches"], "patches",
                  flush=True)  # fmt: skip
            res["load"] = load_test(mk, bodies, args.load_seconds, 8)
            print("load", res["load"], flush=True)
            res["worker_alive_after_load"] = inst.model_ready("cscl")
        finally:
            inst.stop()
    ok = {
        "p50_c1_below_20ms": res["served_c1"]["p50"] < 20,
        "overhead_c8_below_2": res["overhead_c8_per_request"] < 2,
        "zero_failures": res["load"]["failed"] == 0
        and res["served_c1"]["failures"] == 0
        and res["served_c8"]["failures"] == 0,
    }
    res["targets"] = ok
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
