"""`make demo`: the whole training pipeline on one machine, against a real S3 API on loopback."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cscl.ingest import upload_folder
from cscl.io import loopback_s3, storage
from cscl.synthetic import generate_cohort
from cscl_platform.pipelines.local import run_local
from cscl_platform.pipelines.params import params_of


@contextlib.contextmanager
def local_s3(set_env: bool = True) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 (a free port; `cscl.io.loopback_s3`); yield its URL.

    Not a mock: boto3 speaks HTTP S3 to it exactly as to AWS or MinIO. Dummy credentials are
    exported while it runs; with `set_env` also AWS_ENDPOINT_URL, so that kfp.local task
    subprocesses inherit it.
    """
    with loopback_s3.local_s3(export_endpoint=set_env) as s3:
        yield s3.endpoint


# ---------------------------------------------------------------------------------------------
# The demo itself
# ---------------------------------------------------------------------------------------------

BUCKET = "cscl-demo"
PROJECT_PREFIX = f"s3://{BUCKET}"
COHORT_PREFIX = f"{PROJECT_PREFIX}/cohorts/demo"

# Plug-in steps run after the training pipeline: a module listed here that exists in the
# checkout and defines `demo_step(ctx: DemoContext) -> None` is called in order (serving: start
# TorchServe and print one prediction; monitoring: one drift run). Their owners add the module;
# this file does not change.
DEMO_STEP_MODULES = ("cscl_platform.serving.demo", "cscl_platform.monitoring.demo")


@dataclass
class DemoContext:
    """What later demo steps need: where the S3 server, the cohort and the run's outputs are."""

    endpoint_url: str
    out_dir: Path
    cohort_dir: Path
    manifest_uri: str
    labels_uri: str
    project_prefix: str
    run: object = None  # pipelines.local.LocalRun
    model_uri: str | None = None
    notes: list[str] = field(default_factory=list)


def pick_tasks(labels_path: str | Path, folds: int = 2) -> str:
    """Label tasks a tiny cohort can evaluate: categorical columns with ≥ 2 classes of ≥ `folds`
    cases each, and `os` when it has ≥ `folds` events. A tiny synthetic cohort may lack some."""
    import pandas as pd

    lab = pd.read_csv(labels_path)
    tasks = []
    for col in ("subtype", "er_status", "pgr_status", "her2_status", "ki67_status"):
        if col in lab.columns:
            counts = lab[col].value_counts()
            if len(counts) >= 2 and counts.min() >= folds:
                tasks.append(col)
    if "os_event" in lab.columns and lab["os_event"].sum() >= folds:
        tasks.append("os")
    if not tasks:
        raise ValueError(f"{labels_path}: no task with ≥ {folds} cases per class; add cases")
    return ",".join(tasks)


def demo_params(ctx: DemoContext, kind: str = "training", fast: bool = True, **overrides) -> dict:
    """Parameters of pipeline `kind` for a tiny CPU run: random tiny backbone, 1–2 epochs, small
    ABMIL. Only the parameters `kind` declares (pipelines.params); `overrides` win."""

    tasks = pick_tasks(ctx.cohort_dir / "labels.csv", folds=2)
    protocols = "fewshot,kfold" + (",survival" if "os" in tasks.split(",") else "")
    tiny = dict(
        manifest_uri=ctx.manifest_uri,
        labels_uri=ctx.labels_uri,
        project_prefix=ctx.project_prefix,
        s3_endpoint=ctx.endpoint_url,
        transforms_uri=ctx.manifest_uri.replace("manifest.csv", "transforms.csv"),
        num_shards=2,
        backbone="test_resnet",
        allow_random=True,
        target_mpp=2.0,
        patch_size=64,
        adapter_epochs=2 if not fast else 1,
        adapter_batch_size=4,
        pairs_per_case=32,
        slide_epochs=2 if not fast else 1,
        slide_batch_size=4,
        n_tokens=64,
        small_encoder=True,
        tasks=tasks,
        protocols=protocols,
        folds=2,
        n_boot=50,
        ks="1",
        min_score=0.0,
        min_gain_over_baseline=-1.0,  # relaxed on purpose: _say_gate says so and why
    )
    tiny.update(overrides)
    declared = {p.name for p in params_of(kind)}
    unknown = set(overrides) - declared
    if unknown:
        raise ValueError(f"pipeline {kind} has no parameter(s) {sorted(unknown)}")
    return {k: v for k, v in tiny.items() if k in declared}


def make_cohort(out_dir: Path, n_cases: int, seed: int = 0) -> Path:
    """A small synthetic paired cohort (H&E + HER2 + KI67) on local disk; returns its folder."""

    manifest = generate_cohort(
        out_dir,
        n_cases=n_cases,
        seed=seed,
        stains=("HE", "HER2", "KI67"),
        width=1600,
        height=1200,
        workers=1,
        progress=False,
    )
    return Path(manifest).parent


def run_demo(out_dir: Path, n_cases: int = 6, endpoint_url: str | None = None) -> DemoContext:
    """Synth → upload → training pipeline (kfp.local) → plug-in steps. Prints where things are."""
    import importlib
    import importlib.util
    import time

    storage.configure_store(endpoint_url)  # this process; the tasks get `s3_endpoint`
    out_dir = Path(out_dir).resolve()
    t0 = time.perf_counter()
    cohort_dir = out_dir / "cohort"
    if not (cohort_dir / "manifest.csv").exists():
        make_cohort(cohort_dir, n_cases)
    _say(f"1. synthetic cohort: {n_cases} cases × HE/HER2/KI67 in {cohort_dir}")
    storage.ensure_bucket(BUCKET)
    uris = upload_folder(cohort_dir, COHORT_PREFIX)
    _say(f"2. uploaded {len(uris)} objects to {COHORT_PREFIX}/ at {endpoint_url}")
    ctx = DemoContext(
        endpoint_url=endpoint_url or "",
        out_dir=out_dir,
        cohort_dir=cohort_dir,
        manifest_uri=f"{COHORT_PREFIX}/manifest.csv",
        labels_uri=f"{COHORT_PREFIX}/labels.csv",
        project_prefix=PROJECT_PREFIX,
    )
    _say("3. training pipeline with kfp.local (ingest → validate → extract ×shards → register → "
         "pretrain ×2 → embed → evaluate → gate → package → deploy)")  # fmt: skip
    log = out_dir / "pipeline.log"
    _say(f"   the tasks' own output (kfp.local, Great Expectations) goes to {log}")
    with _output_to(log):
        run = run_local("training", demo_params(ctx), out_dir / "kfp")
    ctx.run = run
    _print_run(run)
    _say_gate(run.metrics.get("evaluate/metrics", {}))
    model_dirs = [p for k, p in run.artifacts.items() if k.endswith("/bundle")]
    for key, meta in run.metrics.items():
        if key.endswith("/bundle") and meta.get("model_uri"):
            ctx.model_uri = meta["model_uri"]
    if ctx.model_uri:
        _say(f"   model released to {ctx.model_uri} (bundle copy: {model_dirs[0]})")
    else:
        _say("   no model released (quality gate said no)")
    step_no = 4
    for mod in DEMO_STEP_MODULES:
        if importlib.util.find_spec(mod.rsplit(".", 1)[0]) and importlib.util.find_spec(mod):
            module = importlib.import_module(mod)
            step = getattr(module, "demo_step", None)
            if step is not None:
                _say(f"{step_no}. {_title(module)}")
                step(ctx)
                step_no += 1
    if endpoint_url and ctx.project_prefix.startswith("s3://"):
        files = mirror_store(ctx.project_prefix, out_dir / "s3")
        _say(f"   object store ({ctx.project_prefix}: cohort, features/<extractor-hash>/, "
             f"models/<name>/<version>/) mirrored to {out_dir / 's3'} ({len(files)} files)")  # fmt: skip
    _say(f"done in {time.perf_counter() - t0:.0f} s")
    return ctx


def _say(msg: str) -> None:
    print(msg, flush=True)


def _title(module) -> str:
    """A step's name in plain words: its docstring's first line, up to the parenthesis."""
    first = (module.__doc__ or module.__name__).strip().splitlines()[0]
    return first.split(" (")[0].rstrip(".")


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's and its children's stdout/stderr (fd 1 and 2) to `log` for the block.

    Why fds, not sys.stdout: kfp.local runs each task in a subprocess that inherits them, and
    the tasks' dumps are most of what a demo would otherwise print. On failure the log's tail is
    shown, so nothing is hidden when it matters.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            tail = log.read_text(errors="replace").splitlines()[-30:]
            print("\n".join(["   … last lines of " + str(log) + ":", *tail]), flush=True)
            raise
        finally:
            _restore(saved)
            for copy in saved:
                os.close(copy)


def _restore(saved: tuple[int, int]) -> None:
    """Put fd 1 and 2 back (twice is harmless: the failure path restores before printing)."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in zip((1, 2), saved, strict=True):
        os.dup2(copy, fd)


def _say_gate(metrics: dict) -> None:
    """What the quality gate decided and why, in words (the numbers are in the Metrics artifact)."""
    score, threshold = metrics.get("quality_score"), metrics.get("gate_min_score")
    if score is None:
        return
    passed = metrics.get("gate_passed")
    verdict = "released" if passed in (1, 1.0, True) else "not released"
    _say(f"   quality gate: score {score:.3f} (mean k-fold AUC / C-index over the tasks; 0.5 = "
         f"chance) vs threshold {threshold if threshold is not None else '?'} → {verdict}")  # fmt: skip
    base, gain = metrics.get("gate_baseline_score"), metrics.get("gate_min_gain")
    if base is not None:
        better = "better than" if score > base else "NOT better than"
        _say(f"   the model is {better} mean-pool (score {base:.3f}) on this evaluation")
    relaxed = (threshold is not None and float(threshold) <= 0) or (gain is not None and gain < 0)
    if relaxed:
        _say("   the demo relaxes the gate on purpose (min_score=0, min_gain_over_baseline=-1) so "
             "that serving can be shown: a handful of tiny synthetic cases and 2 epochs cannot train a "
             "slide encoder that beats mean-pool. The pipeline's defaults (min_score 0.6 and better "
             "than mean-pool) would not release such a model; benchmarks/planted_signal.py "
             "shows the method at a scale where it can learn.")  # fmt: skip


KEY_OUTPUTS = {
    "validate/report": "data validation report (HTML)",
    "evaluate/report": "evaluation report (HTML)",
    "package/model_card": "model card (Markdown)",
    "package/bundle": "model bundle",
    "deploy/deployment": "deployment record (Markdown)",
}


def _print_run(run) -> None:
    """Every artifact of the run (paths relative to the run folder), key ones first."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    console.print(f"\nrun folder: {run.run_dir}  ({run.seconds:.0f} s)")
    table = Table(title="artifacts", show_lines=False)
    table.add_column("task/output")
    table.add_column("what")
    table.add_column("path (under the run folder)")
    for key, path in sorted(
        run.artifacts.items(), key=lambda kv: (kv[0] not in KEY_OUTPUTS, kv[0])
    ):
        table.add_row(key, KEY_OUTPUTS.get(key, ""), str(path.relative_to(run.run_dir)))
    console.print(table)
    for key in ("validate/metrics", "collect-features/metrics", "register/metrics"):
        if key in run.metrics:
            console.print(f"{key}: {run.metrics[key]}")


def mirror_store(prefix: str, dest: Path) -> list[Path]:
    """Copy every object under `prefix` to `dest` (the loopback S3 server dies with the demo)."""

    bucket, _ = storage.parse_s3_uri(prefix)
    out = []
    for uri in storage.list_uris(prefix):
        _, key = storage.parse_s3_uri(uri)
        out.append(storage.download(uri, dest / bucket / key))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cscl_platform.demo", description=__doc__)
    p.add_argument("--out", default="data/demo", help="working folder (default data/demo)")
    p.add_argument("--cases", type=int, default=6, help="synthetic cases (default 6)")
    p.add_argument("--s3-endpoint", help="use this S3 endpoint instead of a loopback moto server")
    args = p.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.s3_endpoint:
        run_demo(Path(args.out), args.cases, args.s3_endpoint)
        return 0
    with local_s3() as url:
        run_demo(Path(args.out), args.cases, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
