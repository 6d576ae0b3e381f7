"""Planted-signal benchmark: does CSCL recover IHC status from H&E better than its baselines?

Data: the FEATURE-LEVEL SIMULATOR (cscl.train.simulate), not rendered slides: it writes real HDF5
feature files + manifest + labels + transforms.csv. H&E patch features carry the ER/PGR/HER2/KI67
expression more weakly than IHC does; expression varies in space; `--shared` sets what else the
stains share at a location (default "marker": only the expression). Ground truth (truth.csv,
truth_directions.npz) gives the positive controls.

Protocol (one seed S = simulator seed = training seed): cases split in half by id. Every model is
trained on the first half (supervised models use its er_status labels) and embeds the second half
(≥ 300 cases by default), where the MADELEINE few-shot probe (logistic regression C=1, k per
class, `--draws` paired draws) gives AUC per task at k=1/5/10/25, and a 5-fold Cox model the
C-index. Rows:
- ceilings/controls: patch-label oracle (per-case fraction of H&E patches expressing each
  marker), true-direction projection (mean-pooled H&E on the planted marker directions),
  supervised ABMIL trained on ER (its held-out ER AUC must clearly beat mean-pool, else the run
  says UNINFORMATIVE: the benchmark could not reward any method);
- baselines: mean-pool; MADELEINE-style (same recipe, no adapter/fusion/location pairing);
- CSCL with location pairing, with random pairing (the reference's bug), and with location
  pairing but no cross-stain fusion (what fusion adds);
- HistoStainAlign (ER) vs its CE-only twin (the supervised ABMIL: same encoder, head, schedule).
Paired differences (same draws) are printed per seed; `--summarize` pools seeds (JSON files of
`--json`) with a hierarchical bootstrap (seeds, then draws) for 95 % CIs.

    .venv/bin/python benchmarks/planted_signal.py --seed 0 --json s0.json
    .venv/bin/python benchmarks/planted_signal.py --summarize s0.json s1.json s2.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cscl.data import load_cohort  # noqa: E402
from cscl.eval.fewshot import few_shot  # noqa: E402
from cscl.train import SMALL_ABMIL, pretrain  # noqa: E402
from cscl.train.checkpoint import load_trained, mean_pool_model  # noqa: E402
from cscl.train.presets import preset_overrides  # noqa: E402
from cscl.train.simulate import MARKERS, SHARED_CONTENT, SimConfig, simulate_cohort  # noqa: E402

TASKS = ("er_status", "pgr_status", "her2_status", "ki67_status", "subtype")
KS = (1, 5, 10, 25)
ORACLE, PROJECTION, MEAN = "oracle: patch labels", "control: true-direction projection", "mean-pool"
SUPERVISED, MADELEINE = "supervised ABMIL (ER) = CE-only", "MADELEINE-style"
LOC, RAND, NOFUSION = "CSCL location", "CSCL random", "CSCL location, no fusion"
HSA = "HistoStainAlign (ER)"
# (a, b): paired difference a − b, reported per task and k
COMPARISONS = [(LOC, RAND), (LOC, MADELEINE), (LOC, NOFUSION), (LOC, MEAN), (RAND, MEAN),
               (MADELEINE, MEAN), (NOFUSION, MEAN), (HSA, SUPERVISED), (HSA, MEAN),
               (SUPERVISED, MEAN)]  # fmt: skip
MARGIN = 0.05  # supervised ABMIL must beat mean-pool by this much for the run to be informative


def build_data(args) -> dict:
    sc = SimConfig(n_cases=args.cases, seed=args.seed, he_marker_amp=args.he_amp,
                   shared_content=args.shared)  # fmt: skip
    key = hashlib.sha256(json.dumps(asdict(sc), sort_keys=True).encode()).hexdigest()[:10]
    root = Path(args.root) / f"planted_{key}"
    if not (root / "truth_directions.npz").exists():
        t = time.perf_counter()
        simulate_cohort(root, sc)
        print(f"simulated {sc.n_cases} cases in {time.perf_counter() - t:.1f}s → {root}")
    man = pd.read_csv(root / "manifest.csv", dtype={"case_id": str})
    cases = sorted(man["case_id"].unique())
    half = set(cases[: len(cases) // 2])
    man[man["case_id"].isin(half)].to_csv(root / "manifest_pretrain.csv", index=False)
    man[~man["case_id"].isin(half)].to_csv(root / "manifest_eval.csv", index=False)
    return {"root": root, "features": root / "features", "labels": root / "labels.csv",
            "transforms": root / "transforms.csv", "sim": sc}  # fmt: skip


def train_all(d: dict, args) -> tuple[dict, dict, Path]:
    """Train every model on the pretraining half (cached by settings); name → TrainedModel."""
    tag = f"e{args.epochs1}_{args.epochs2}_b{args.batch2}_s{args.seed}_{args.preset or 'recipe'}"
    runs = Path(d["root"]) / f"runs_{tag}"
    inputs = dict(features=d["features"], manifest=str(d["root"] / "manifest_pretrain.csv"))
    regs, lab = str(d["transforms"]), dict(labels=str(d["labels"]))
    timings: dict[str, float] = {}

    def cfg(objective: str, **kw) -> dict:
        """The objective's defaults (+ preset), the benchmark's schedule, then `kw`."""
        stage2 = objective != "adapter"
        base = dict(seed=args.seed, device=args.device, quiet=args.quiet,
                    epochs=args.epochs2 if stage2 else args.epochs1,
                    lr=args.lr2 if stage2 else args.lr1,
                    warmup_epochs=max(1, (args.epochs2 if stage2 else args.epochs1) // 10))  # fmt: skip
        if stage2:
            base.update(abmil=dict(SMALL_ABMIL), batch_size=args.batch2,
                        rankme_after=max(1, args.epochs2 // 3))  # fmt: skip
        else:
            base.update(batch_size=16, pairs_per_case=128)
        return {**preset_overrides(args.preset, objective), **base, **kw}

    def timed(name: str, fn) -> Path:
        out = runs / name
        if not (out / "config.json").exists():
            t = time.perf_counter()
            fn(out)
            timings[name] = time.perf_counter() - t
            print(f"  trained {name} in {timings[name]:.0f}s (load {os.getloadavg()[0]:.1f})")
        return out

    models = {MEAN: mean_pool_model()}
    sup = dict(label_task="er_status", batch_size=16)
    models[SUPERVISED] = load_trained(timed("supervised", lambda o: pretrain(
        "supervised", **inputs, **lab, out=o, config=cfg("supervised", **sup))))  # fmt: skip
    models[HSA] = load_trained(timed("histostainalign", lambda o: pretrain(
        "histostainalign", **inputs, **lab, out=o, config=cfg("histostainalign", **sup))))  # fmt: skip
    models[MADELEINE] = load_trained(timed("madeleine", lambda o: pretrain(
        "madeleine", **inputs, out=o, config=cfg("madeleine"))))  # fmt: skip
    adapters = {}
    for pairing in ("location", "random"):
        adapters[pairing] = timed(f"adapter_{pairing}", lambda o, p=pairing: pretrain(
            "adapter", **inputs, registration=regs, out=o, config=cfg("adapter", pairing=p)))  # fmt: skip
    for name, pairing, kw in ((LOC, "location", {}), (RAND, "random", {}),
                              (NOFUSION, "location", {"fusion": False})):  # fmt: skip
        run = "cscl_" + pairing + ("_nofusion" if kw else "")
        models[name] = load_trained(timed(run, lambda o, p=pairing, kw=kw: pretrain(
            "cscl", **inputs, registration=regs, adapter=adapters[p], out=o,
            config=cfg("cscl", pairing=p, **kw))))  # fmt: skip
    return models, timings, runs


def embed_eval(models: dict, d: dict) -> tuple[list[str], dict, dict]:
    ev = load_cohort(d["features"], str(d["root"] / "manifest_eval.csv"), he_only=True)
    ids = [c.case_id for c in ev.cases]
    embs, direct = {}, {}
    for name, m in models.items():
        embs[name] = np.stack([m.embed(c.he.features.astype(np.float32))[0] for c in ev.cases])
        if m.head is not None:  # supervised models: their own ER probability from H&E
            with torch.no_grad():  # the head on the embeddings above (= m.predict_status)
                p = m.head.predict_proba(torch.from_numpy(embs[name]).float()).numpy()
            direct[name] = p[:, m.classes.index("positive")]
    truth = pd.read_csv(d["root"] / "truth.csv", dtype={"case_id": str}).set_index("case_id")
    embs[ORACLE] = truth.loc[ids, [f"expr_frac_{m}" for m in MARKERS]].to_numpy()
    v = np.load(d["root"] / "truth_directions.npz")["he"]
    embs[PROJECTION] = embs[MEAN] @ v.T
    order = [ORACLE, PROJECTION, MEAN, SUPERVISED, HSA, MADELEINE, RAND, NOFUSION, LOC]
    return ids, {k: embs[k] for k in order}, direct


def evaluate(ids, embs: dict, direct: dict, d: dict, draws: int) -> dict:
    from cscl.eval.survival import survival_eval

    labels = pd.read_csv(d["labels"], dtype={"case_id": str}).set_index("case_id").loc[ids]
    res: dict = {}
    for name, X in embs.items():
        r: dict = {"fewshot": {}}
        for task in TASKS:
            df = few_shot(X, labels[task].to_numpy(), ks=KS, draws=draws, seed=0)
            r["fewshot"][task] = {str(int(row.k)): row.auc_draws for _, row in df.iterrows()
                                  if row.status == "ok"}  # fmt: skip
        s = survival_eval(X, labels["os_time"].to_numpy(), labels["os_event"].to_numpy(), ids,
                          n_boot=200)  # fmt: skip
        r["cindex"] = {k: float(s.cindex[k]) for k in ("value", "ci_low", "ci_high")}
        res[name] = r
    y = (labels["er_status"] == "positive").to_numpy().astype(int)
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(y), len(y)) for _ in range(1000)]
    for name, p in direct.items():
        vals = [float(roc_auc_score(y[b], p[b])) for b in boots if 0 < y[b].sum() < len(b)]
        res[name]["direct_er_auc"] = {"value": float(roc_auc_score(y, p)), "boot": vals}
    return res


def mean(v) -> float:
    return float(np.mean(v)) if len(v) else float("nan")


def verdict(res: dict) -> dict:
    """Informative iff supervised ABMIL's held-out ER AUC beats mean-pool's best few-shot ER AUC
    (k=25) by MARGIN: otherwise the benchmark cannot reward a method (issue 10 item 1)."""
    sup = res[SUPERVISED].get("direct_er_auc", {}).get("value", float("nan"))
    mp = mean(res[MEAN]["fewshot"]["er_status"].get("25", []))
    oracle = mean(res[ORACLE]["fewshot"]["er_status"].get("25", []))
    ok = bool(sup >= mp + MARGIN)
    return {"informative": ok, "supervised_er_auc": sup, "mean_pool_er_auc_k25": mp,
            "oracle_er_auc_k25": oracle, "margin": MARGIN}  # fmt: skip


def paired(res: dict, a: str, b: str, task: str, k: str) -> list[float]:
    x, y = res[a]["fewshot"][task].get(k), res[b]["fewshot"][task].get(k)
    return [] if not x or not y else [p - q for p, q in zip(x, y, strict=True)]


def print_run(res: dict, ver: dict) -> None:
    for task in TASKS:
        print(f"\nFew-shot AUC, {task} (mean±std over draws; eval half, k per class)")
        print(f"{'':38s}" + "".join(f"{'k=' + k:>12s}" for k in map(str, KS)))
        for name, r in res.items():
            cells = [f"{mean(v):.3f}±{np.std(v):.2f}" if (v := r["fewshot"][task].get(str(k)))
                     else "n/a" for k in KS]  # fmt: skip
            print(f"{name:38s}" + "".join(f"{c:>12s}" for c in cells))
    print("\nSurvival: 5-fold Cox on embeddings, Harrell's C-index [95% bootstrap CI]")
    for name, r in res.items():
        c = r["cindex"]
        print(f"{name:38s} {c['value']:.3f} [{c['ci_low']:.3f}-{c['ci_high']:.3f}]")
    print("\nER status straight from the model's own head (trained on the pretraining half):")
    for name, r in res.items():
        if "direct_er_auc" in r:
            lo, hi = np.percentile(r["direct_er_auc"]["boot"], [2.5, 97.5])
            print(f"{name:38s} AUC {r['direct_er_auc']['value']:.3f} [{lo:.3f}-{hi:.3f}]")
    print("\nPaired differences of few-shot AUC (same draws), mean over draws [min, max], k=10/25")
    for a, b in COMPARISONS:
        cells = []
        for task in TASKS:
            for k in ("10", "25"):
                dv = paired(res, a, b, task, k)
                cells.append(f"{task[:5]}@{k} {mean(dv):+.3f}" if dv else f"{task[:5]}@{k} n/a")
        print(f"  {a} − {b}: " + ", ".join(cells))
    word = "INFORMATIVE" if ver["informative"] else "UNINFORMATIVE"
    print(f"\nBenchmark verdict: {word} — supervised ABMIL ER AUC {ver['supervised_er_auc']:.3f} "
          f"vs mean-pool {ver['mean_pool_er_auc_k25']:.3f} (k=25; needs +{MARGIN}); "
          f"patch-label oracle {ver['oracle_er_auc_k25']:.3f}")  # fmt: skip
    if not ver["informative"]:
        print("  the simulator leaves no learnable headroom at these settings: differences "
              "between methods below say nothing about the methods")  # fmt: skip


def hier_boot(per_seed: list[list[float]], n: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95 % CI of the mean paired difference: resample seeds, then draws within each seed."""
    rng = np.random.default_rng(seed)
    per_seed = [np.asarray(v) for v in per_seed if len(v)]
    out = []
    for _ in range(n):
        pick = rng.integers(0, len(per_seed), len(per_seed))
        out.append(np.mean([rng.choice(per_seed[i], len(per_seed[i])).mean() for i in pick]))
    return tuple(np.percentile(out, [2.5, 97.5]))


def summarize(files: list[str]) -> int:
    runs = [json.loads(Path(f).read_text()) for f in files]
    seeds = [r["settings"]["seed"] for r in runs]
    print(f"MULTI-SEED SUMMARY: seeds {seeds}; "
          f"{runs[0]['settings']['cases']} cases per seed (half evaluated); "
          f"shared content {runs[0]['settings']['shared']}, H&E amplitude "
          f"{runs[0]['settings']['he_amp']}")  # fmt: skip
    for r in runs:
        v = r["verdict"]
        print(f"  seed {r['settings']['seed']}: {'informative' if v['informative'] else 'UNINFORMATIVE'}"
              f" (supervised {v['supervised_er_auc']:.3f} vs mean-pool {v['mean_pool_er_auc_k25']:.3f})")  # fmt: skip
    names = list(runs[0]["results"])
    for task in TASKS:
        print(f"\nFew-shot AUC, {task}: mean over seeds of the mean over draws")
        print(f"{'':38s}" + "".join(f"{'k=' + str(k):>12s}" for k in KS))
        for name in names:
            cells = []
            for k in map(str, KS):
                m = [mean(r["results"][name]["fewshot"][task].get(k, [])) for r in runs]
                cells.append(f"{np.mean(m):.3f}" if np.isfinite(m).all() else "n/a")
            print(f"{name:38s}" + "".join(f"{c:>12s}" for c in cells))
    print("\nC-index (mean over seeds):")
    for name in names:
        print(f"{name:38s} {np.mean([r['results'][name]['cindex']['value'] for r in runs]):.3f}")
    print(
        "\nPaired differences (a − b) of few-shot AUC, mean over seeds × draws [95% CI, "
        "hierarchical bootstrap]; 'wins' = draws where a > b"
    )
    table = []
    for a, b in COMPARISONS:
        for task in TASKS:
            for k in map(str, KS):
                per = [paired(r["results"], a, b, task, k) for r in runs]
                if not all(per):
                    continue
                flat = np.concatenate(per)
                lo, hi = hier_boot(per)
                row = {"a": a, "b": b, "task": task, "k": int(k), "diff": float(flat.mean()),
                       "ci_low": float(lo), "ci_high": float(hi),
                       "wins": int((flat > 0).sum()), "n": int(len(flat))}  # fmt: skip
                table.append(row)
        print(f"\n  {a} − {b}")
        for task in TASKS:
            cells = [f"k={r['k']} {r['diff']:+.3f} [{r['ci_low']:+.3f},{r['ci_high']:+.3f}] "
                     f"{r['wins']}/{r['n']}" for r in table
                     if r["a"] == a and r["b"] == b and r["task"] == task]  # fmt: skip
            print(f"    {task:12s} " + "; ".join(cells))
    direct = [(r["results"][HSA]["direct_er_auc"]["value"],
               r["results"][SUPERVISED]["direct_er_auc"]["value"]) for r in runs]  # fmt: skip
    print("\nER from the model's own head: HistoStainAlign vs CE-only, per seed: "
          + ", ".join(f"{h:.3f} vs {c:.3f}" for h, c in direct))  # fmt: skip
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="simulator and training seed")
    ap.add_argument("--json", default=None, help="write every figure (per-draw AUCs) here")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="pool --json files of seeds")
    ap.add_argument("--quick", action="store_true", help="fewer cases/epochs (~minutes)")
    ap.add_argument("--cases", type=int, default=None, help="cases (half pretrain, half eval)")
    ap.add_argument("--epochs1", type=int, default=None, help="stage-1 epochs")
    ap.add_argument("--epochs2", type=int, default=None, help="stage-2 epochs")
    ap.add_argument("--lr1", type=float, default=1e-3)
    ap.add_argument("--lr2", type=float, default=3e-4)
    ap.add_argument("--batch2", type=int, default=24, help="stage-2 batch (cases)")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--he-amp", type=float, default=SimConfig.he_marker_amp,
                    help="H&E marker amplitude (IHC: 4)")  # fmt: skip
    ap.add_argument("--shared", choices=SHARED_CONTENT, default=SimConfig.shared_content,
                    help="what H&E and IHC share at a location besides the marker")  # fmt: skip
    ap.add_argument("--preset", default=None, help="training preset (e.g. paper); default recipe")
    ap.add_argument("--device", default=None)
    ap.add_argument("--root", default=str(ROOT / "data" / "bench"))
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: shared CPU)")
    args = ap.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    torch.set_num_threads(args.threads)
    args.cases = args.cases or (240 if args.quick else 800)
    args.epochs1 = args.epochs1 or (10 if args.quick else 30)
    args.epochs2 = args.epochs2 or (15 if args.quick else 40)
    print("PLANTED-SIGNAL BENCHMARK — data: feature-level simulator (cscl.train.simulate)")
    t0 = time.perf_counter()
    d = build_data(args)
    print(f"seed {args.seed}: {args.cases} cases ({args.cases // 2} pretrain / "
          f"{args.cases - args.cases // 2} eval), shared content {args.shared}, H&E marker "
          f"amplitude {args.he_amp} vs IHC {d['sim'].ihc_marker_amp}; stage-1 {args.epochs1} "
          f"epochs, stage-2 {args.epochs2} epochs (batch {args.batch2}), training "
          f"{args.preset or 'recipe defaults'}")  # fmt: skip
    models, timings, runs = train_all(d, args)
    ids, embs, direct = embed_eval(models, d)
    res = evaluate(ids, embs, direct, d, args.draws)
    ver = verdict(res)
    print_run(res, ver)
    hist = {}
    for name in ("cscl_location", "cscl_random", "madeleine"):
        h = json.loads((runs / name / "config.json").read_text())["history"][-1]
        hist[name] = {k: h.get(k) for k in ("loss", "rankme", "retrieval_train",
                                            "retrieval_heldout")}  # fmt: skip
    print("\nLast epoch (RankMe; H&E→IHC retrieval top-1 train vs held-out):")
    for name, h in hist.items():
        print(f"  {name:14s} " + ", ".join(f"{k} {v:.3f}" for k, v in h.items() if v is not None))
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f}s (load {os.getloadavg()[0]:.1f})")
    if args.json:
        settings = {k: getattr(args, k) for k in ("seed", "cases", "epochs1", "epochs2", "lr1",
                    "lr2", "batch2", "draws", "he_amp", "shared", "preset")}  # fmt: skip
        Path(args.json).write_text(json.dumps({
            "settings": settings, "verdict": ver, "results": res, "last_epoch": hist,
            "timings_s": timings, "total_s": total, "load": os.getloadavg()[0]}, indent=1))  # fmt: skip
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
