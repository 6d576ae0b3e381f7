"""`evaluate(...)`: every declared task × protocol × embeddings table → metrics.json, report.html,
PNGs and pooled out-of-fold predictions.parquet.

Several embeddings tables (the method first, then baselines or the current model) are evaluated
on the cases they all share, with the same folds, draws and bootstrap resamples, so their scores
are paired and the first table is tested against each other one with a one-sided Wilcoxon test.

The steps, each its own function: `load_inputs` (validation) → `plan` (which protocol runs on
which task) → `run_plan` (the protocols of `cscl.eval.protocols`) → `assemble_metrics` (with the
paired tests) → `write_outputs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cscl import __version__
from cscl.errors import InputError, TooFewCases
from cscl.eval.bootstrap import wilcoxon_greater
from cscl.eval.headline import ReportOptions
from cscl.eval.inputs import EmbeddingsSource, EvalInputs, load_inputs
from cscl.eval.outputs import write_outputs
from cscl.eval.protocols import (
    EvalConfig,
    Protocol,
    TaskData,
    get_protocol,
    parse_protocols,
    protocol_names,
)
from cscl.eval.tasks import CLASSIFICATION, Task
from cscl.eval.triage import TARGET_SENSITIVITIES, check_sensitivity
from cscl.progress import progress as progress_log


def evaluate(
    embeddings: Mapping[str, EmbeddingsSource] | EmbeddingsSource,
    labels_uri: str | Path | pd.DataFrame,
    tasks: str | Sequence[str],
    out_dir: str | Path,
    protocols: str | Sequence[str] = protocol_names(),
    *,
    folds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    boot_seed: int = 42,
    ks: Sequence[int] = (1, 5, 10, 25),
    draws: int = 10,
    fewshot_scale: bool = False,
    n_iter: int = 10,
    inner_folds: int = 5,
    cox_components: int | None = None,
    cox_alpha: float = 1.0,
    triage_sensitivities: Sequence[float] = TARGET_SENSITIVITIES,
    progress: bool = False,
    write_report: bool = True,
    report_options: ReportOptions | None = None,
    n_threads: int | None = 1,
) -> dict:
    """Evaluate, write the outputs under `out_dir`, and return the metrics dict (= metrics.json).

    `embeddings` maps a method name to its table; the first one is the method under test and
    the others are compared against it (Wilcoxon, one-sided: first > other).
    `triage_sensitivities`: the operating points of the IHC triage report of binary
    `<marker>_status` tasks (cscl.eval.triage); () leaves it out. `n_threads` caps
    BLAS threads: the many small fits are slower with threaded BLAS (spin-waiting), not faster.
    `report_options` (`cscl.eval.headline.ReportOptions`: score metric, the quality gate a
    pipeline applies, the unit of survival times) only shape report.html.
    """
    cfg = EvalConfig(
        protocols=tuple(parse_protocols(protocols)),
        folds=folds,
        n_boot=n_boot,
        seed=seed,
        boot_seed=boot_seed,
        ks=tuple(ks),
        draws=draws,
        fewshot_scale=fewshot_scale,
        n_iter=n_iter,
        inner_folds=inner_folds,
        cox_components=cox_components,
        cox_alpha=cox_alpha,
        triage_sensitivities=tuple(check_sensitivity(s) for s in triage_sensitivities),
    )
    with threadpool_limits(limits=n_threads):
        inputs = load_inputs(embeddings, labels_uri, tasks)
        steps, skipped = plan(inputs.tasks, cfg.protocols)
        runs = run_plan(inputs, steps, cfg, progress)
        metrics = assemble_metrics(inputs, cfg, runs, skipped)
        return write_outputs(
            metrics, runs.predictions, out_dir, report=write_report, options=report_options
        )


Step = tuple[Task, Protocol]


def plan(tasks: list[Task], protocols: Sequence[str]) -> tuple[list[Step], list[dict]]:
    """(steps, skipped): each task runs the chosen protocols of its kind; a task with none is a
    documented skip, not an error (e.g. `--protocol kfold` with a survival task declared)."""
    steps: list[Step] = []
    skipped: list[dict] = []
    for t in tasks:
        fitting = [get_protocol(p) for p in protocols if get_protocol(p).kind == t.kind]
        if not fitting:
            reason = f"{t.kind} task but no matching protocol among {list(protocols)}"
            skipped.append({"task": t.name, "reason": reason})
        steps += [(t, p) for p in fitting]
    return steps, skipped


@dataclass
class Runs:
    """Everything the protocols produced, in run order."""

    results: dict[str, dict[str, dict]] = field(default_factory=dict)  # task → method → proto
    paired: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    predictions: list[pd.DataFrame] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def run_plan(inputs: EvalInputs, steps: list[Step], cfg: EvalConfig, progress: bool) -> Runs:
    """Run every (task, protocol) step on every embeddings table."""
    runs = Runs(results={t.name: {n: {} for n in inputs.methods} for t in inputs.tasks})
    case_ids = inputs.cases["case_id"].to_numpy(str)
    with progress_log(quiet=not progress) as bar:  # a bar, or log lines off a terminal
        bar_task = bar.add_task("evaluating", total=len(steps) * len(inputs.methods))
        for task, proto in steps:
            target = inputs.targets[task.name]
            for method, X in inputs.X.items():
                bar.update(
                    bar_task, description=f"evaluating {task.name} · {proto.name} · {method}"
                )
                data = TaskData(task.name, X[target.index], target, case_ids[target.index])
                try:
                    out = proto.run(data, cfg)
                except TooFewCases as exc:  # like an impossible few-shot k: a note, not an abort
                    runs.skipped.append({"task": task.name, "method": method,
                                         "protocol": proto.name, "reason": exc.message})  # fmt: skip
                    bar.advance(bar_task)
                    continue
                runs.results[task.name][method][proto.name] = out.section
                runs.paired.setdefault((task.name, method), {}).update(out.paired)
                runs.skipped += [{"task": task.name, "method": method, **s} for s in out.skipped]
                if out.predictions is not None:
                    p = out.predictions.assign(method=method, task=task.name, protocol=proto.name)
                    runs.predictions.append(p)
                bar.advance(bar_task)
    if steps and not any(r for per in runs.results.values() for r in per.values()):
        reasons = sorted({s["reason"] for s in runs.skipped})
        raise InputError(
            "nothing could be evaluated: every task and protocol was skipped ("
            + "; ".join(reasons[:3])
            + ")",
            hint="add cases, lower --folds, or choose tasks with more cases per class",
        )
    return runs


def paired_tests(runs: Runs, task: str, methods: list[str]) -> dict[str, dict]:
    """One-sided Wilcoxon tests, primary (first method) > each other, on every paired score."""
    primary, tests = methods[0], {}
    mine = runs.paired.get((task, primary), {})
    for other in methods[1:]:
        theirs = runs.paired.get((task, other), {})
        found = {k: wilcoxon_greater(a, theirs[k]) for k, a in mine.items() if k in theirs}
        if found:
            tests[other] = found
    return tests


def task_entry(inputs: EvalInputs, task: Task, runs: Runs) -> dict:
    """metrics.json `tasks[<name>]`: the labelled cases, each method's results, the tests."""
    tgt = inputs.targets[task.name]
    entry: dict = {"type": task.kind, "n_cases": int(len(tgt.index))}
    entry["n_missing_labels"] = tgt.n_missing
    if task.kind == CLASSIFICATION:
        entry["classes"] = tgt.classes
        entry["class_counts"] = {c: int((tgt.y == c).sum()) for c in tgt.classes}
    else:
        entry["n_events"] = int(tgt.event.sum())
    entry["results"] = runs.results[task.name]
    entry["comparisons"] = paired_tests(runs, task.name, inputs.methods)
    return entry


def assemble_metrics(inputs: EvalInputs, cfg: EvalConfig, runs: Runs, skipped: list) -> dict:
    """The metrics dict (format cscl-eval/1, docs/CONTRACTS.md)."""
    return {
        "format": "cscl-eval/1",
        "cscl_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "methods": inputs.methods,
        "primary": inputs.methods[0],
        "config": cfg.describe([t.name for t in inputs.tasks]),
        "dataset": inputs.dataset,
        "tasks": {t.name: task_entry(inputs, t, runs) for t in inputs.tasks},
        "skipped": skipped + runs.skipped,
        "notes": inputs.notes,
    }
