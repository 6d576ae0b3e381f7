"""Run a pipeline on this machine with KFP's local runner (no cluster, no Docker).

`kfp.local.SubprocessRunner(use_venv=False)` runs each task as a subprocess of the current
Python, so the installed cscl package is what runs (the image is ignored); tasks run one at a
time. Artifacts land under `<pipeline_root>/<run>/<task>/<output>`.
"""

from __future__ import annotations

import builtins
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from kfp import local

from cscl_platform.pipelines import build


@dataclass
class LocalRun:
    """Where a local run left its artifacts, and what each task reported."""

    name: str
    run_dir: Path
    seconds: float
    artifacts: dict[str, Path] = field(default_factory=dict)  # "<task>/<output>" → path
    metrics: dict[str, dict] = field(default_factory=dict)  # "<task>/<output>" → metadata

    def tasks(self) -> list[str]:
        return sorted(
            {k.split("/")[0] for k in self.artifacts} | {k.split("/")[0] for k in self.metrics}
        )

    def find(self, task_prefix: str, output: str) -> Path:
        """Path of output `output` of the (first) task whose directory starts with the prefix."""
        for key, path in sorted(self.artifacts.items()):
            t, o = key.rsplit("/", 1)
            if t.split("/")[-1].startswith(task_prefix) and o == output:
                return path
        raise KeyError(f"no output {output!r} of a task {task_prefix!r} in {self.run_dir}")


def _collect(run_dir: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """Every output artifact (from each task's executor_output.json) and its metadata."""
    arts: dict[str, Path] = {}
    metas: dict[str, dict] = {}
    for eo in sorted(run_dir.rglob("executor_output.json")):
        task_dir = eo.parent
        rel = task_dir.relative_to(run_dir).as_posix()
        try:
            doc = json.loads(eo.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for out_name, entry in (doc.get("artifacts") or {}).items():
            for a in entry.get("artifacts", []):
                key = f"{rel}/{out_name}"
                meta = a.get("metadata") or {}
                if meta:
                    metas[key] = meta
                p = task_dir / out_name
                if p.exists():
                    arts[key] = p
    return arts, metas


def run_local(
    name: str,
    params: dict,
    pipeline_root: str | Path = "runs/kfp",
    *,
    raise_on_error: bool = True,
) -> LocalRun:
    """Run pipeline `name` (see `pipelines.PIPELINES`) locally; return where its outputs are."""
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=raise_on_error,
    )
    pipeline = build(name, cluster=False)
    before = {p.name for p in root.iterdir()}
    t0 = time.perf_counter()
    # kfp.local indents task logs by swapping `builtins.print`; with tasks of a ParallelFor the
    # swaps interleave and the indented print can outlive the run. Put the real one back.
    real_print = builtins.print
    try:
        pipeline(**params)
    finally:
        builtins.print = real_print
    seconds = time.perf_counter() - t0
    new = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name not in before),
        key=lambda p: p.stat().st_mtime,
    )
    if not new:
        raise RuntimeError(f"the local run wrote nothing under {root}")
    run_dir = new[-1]
    arts, metas = _collect(run_dir)
    return LocalRun(name, run_dir, seconds, arts, metas)
