"""The inputs of an evaluation, loaded and checked before any model is fitted.

Why first: the slow part (thousands of small fits) must not start on input that fails later; a
bad task, a one-class label column or tables that share no case fail here with their name. Every
case dropped on the way is counted so the report can say so.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cscl.embeddings import read_embeddings
from cscl.errors import InputError
from cscl.eval.tasks import (
    CLASSIFICATION,
    ClassTarget,
    SurvTarget,
    Task,
    classification_target,
    join,
    parse_tasks,
    survival_target,
)
from cscl.io import storage
from cscl.io.manifest import label_notes, load_labels

EmbeddingsSource = str | Path | tuple[pd.DataFrame, np.ndarray]


@dataclass(frozen=True)
class EvalInputs:
    """Embeddings of every method on the cases they all share, with the labels of those cases."""

    X: dict[str, np.ndarray]  # method → (n_cases, dim); rows follow `cases`; first = primary
    cases: pd.DataFrame  # label rows of the shared cases, sorted by case_id
    tasks: list[Task]
    targets: dict[str, ClassTarget | SurvTarget]  # task name → its labelled cases
    dataset: dict  # counts for metrics.json
    notes: list[str]

    @property
    def methods(self) -> list[str]:
        return list(self.X)


def load_embeddings(source: EmbeddingsSource) -> tuple[pd.DataFrame, np.ndarray]:
    """(meta, X) from a local path, an s3:// URI, or an in-memory (meta, X) pair."""
    if isinstance(source, tuple):
        return source
    if storage.is_s3(source):
        with tempfile.TemporaryDirectory() as tmp:
            return read_embeddings(storage.download(str(source), Path(tmp) / "embeddings.parquet"))
    path = storage.local_path(source)
    if not path.exists():
        raise InputError(f"embeddings table {path} does not exist", hint="run `cscl embed` first")
    return read_embeddings(path)


def load_label_table(labels: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Labels from a file/URI or a DataFrame (copied), normalised by `load_labels`."""
    return load_labels(labels)


def load_inputs(
    embeddings: Mapping[str, EmbeddingsSource] | EmbeddingsSource,
    labels: str | Path | pd.DataFrame,
    tasks: str | Sequence[str],
) -> EvalInputs:
    """Load, join and validate; `embeddings` maps method names to tables (one table: 'cscl')."""
    if not isinstance(embeddings, Mapping):
        embeddings = {"cscl": embeddings}
    if not embeddings:
        raise InputError("no embeddings table given")
    table = load_label_table(labels)
    task_list = parse_tasks(tasks, table)
    loaded = {n: load_embeddings(src) for n, src in embeddings.items()}
    each = {n: join(meta, X, table) for n, (meta, X) in loaded.items()}
    common = sorted(set.intersection(*(set(j.labels["case_id"]) for j in each.values())))
    if not common:
        raise InputError(f"the embeddings tables {list(embeddings)} share no labelled case")
    shared = {n: join(meta, X, table, cases=common) for n, (meta, X) in loaded.items()}
    cases = shared[next(iter(shared))].labels  # identical case order for every method
    dataset = {
        "labels": "<dataframe>" if isinstance(labels, pd.DataFrame) else str(labels),
        "n_label_rows": int(len(table)),
        "n_cases": len(common),
        "methods": {},
    }
    notes: list[str] = label_notes(table)
    for n, src in embeddings.items():
        counts = dict(each[n].counts)
        counts["embedding_dim"] = int(shared[n].X.shape[1])
        counts["not_shared_with_other_methods"] = int(counts["n_cases"] - len(common))
        counts["source"] = "<memory>" if isinstance(src, tuple) else str(src)
        dataset["methods"][n] = counts
        notes += _count_notes(n, counts)
    targets = task_targets(cases, task_list)
    for t in task_list:
        if targets[t.name].n_missing:
            notes.append(f"{t.name}: {targets[t.name].n_missing} case(s) without a label dropped")
    X = {n: j.X for n, j in shared.items()}
    return EvalInputs(X, cases, task_list, targets, dataset, notes)


def task_targets(cases: pd.DataFrame, tasks: list[Task]) -> dict[str, ClassTarget | SurvTarget]:
    """Every task's labels, validated (two classes; survival times > 0 and some events)."""
    return {
        t.name: classification_target(cases, t.name)
        if t.kind == CLASSIFICATION
        else survival_target(cases, t.name)
        for t in tasks
    }


def _count_notes(method: str, c: dict) -> list[str]:
    notes = []
    if c["labels_without_embedding"]:
        notes.append(
            f"{method}: {c['labels_without_embedding']} labelled case(s) have no embedding"
        )
    if c["embeddings_without_labels"]:
        notes.append(
            f"{method}: {c['embeddings_without_labels']} embedded case(s) have no label row"
        )
    if c["not_shared_with_other_methods"]:
        notes.append(
            f"{method}: {c['not_shared_with_other_methods']} case(s) left out because another "
            "embeddings table lacks them (methods are compared on the same cases)"
        )
    if c.get("cases_with_several_slides_averaged"):
        notes.append(
            f"{method}: {c['cases_with_several_slides_averaged']} case(s) have several slides; "
            "their embeddings were averaged"
        )
    return notes
