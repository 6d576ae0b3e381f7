"""Task declarations and the join of embeddings with labels.

Tasks are declared by name, never guessed: a name with `<name>_time` + `<name>_event` columns is a
survival task, any other name must be a label column (categorical). Every case dropped on the way
(no embedding, no label, NaN label) is counted so the report can say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cscl.errors import InputError
from cscl.io.manifest import HE, survival_arrays

CLASSIFICATION = "classification"
SURVIVAL = "survival"
_RESERVED = {"case_id", "split", "slide_id", "stain"}


@dataclass(frozen=True)
class Task:
    """One declared evaluation task."""

    name: str
    kind: str  # CLASSIFICATION or SURVIVAL


def split_task_list(spec: str | Iterable[str]) -> list[str]:
    """`"er_status, subtype,os"` or a list → clean list of names (order kept, no duplicates)."""
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    names: list[str] = []
    for item in items:
        item = item.strip()
        if item and item not in names:
            names.append(item)
    if not names:
        raise InputError("no tasks declared", hint="pass e.g. --tasks er_status,subtype,os")
    return names


def parse_tasks(spec: str | Iterable[str | Task], labels: pd.DataFrame) -> list[Task]:
    """Resolve declared task names against the label columns; unknown names are an error."""
    if not isinstance(spec, str):
        spec = list(spec)
        if spec and all(isinstance(t, Task) for t in spec):
            return list(spec)  # type: ignore[return-value]
        spec = [t.name if isinstance(t, Task) else t for t in spec]
    cols = set(labels.columns)
    tasks = []
    for name in split_task_list(spec):
        if f"{name}_time" in cols and f"{name}_event" in cols:
            tasks.append(Task(name, SURVIVAL))
        elif name in cols and name not in _RESERVED:
            tasks.append(Task(name, CLASSIFICATION))
        else:
            available = sorted(c for c in cols if c not in _RESERVED and not c.endswith("_event"))
            available = [c[: -len("_time")] if c.endswith("_time") else c for c in available]
            raise InputError(
                f"unknown task {name!r}: the labels have no column {name!r} and no "
                f"{name}_time/{name}_event pair",
                hint=f"declare one of {available}",
            )
    return tasks


@dataclass
class ClassTarget:
    """Labels of one classification task for the cases that have one."""

    index: np.ndarray  # row positions into the aligned case table
    y: np.ndarray  # str labels
    classes: list[str]
    n_missing: int  # NaN labels dropped


@dataclass
class SurvTarget:
    index: np.ndarray
    time: np.ndarray
    event: np.ndarray  # bool
    n_missing: int


def label_strings(values: pd.Series) -> pd.Series:
    """Labels as strings; integral floats (1.0 from a CSV with gaps) become '1', not '1.0'."""

    def _s(v):
        if isinstance(v, float | np.floating) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return values.map(_s)


def classification_target(labels: pd.DataFrame, task: str) -> ClassTarget:
    """Non-missing labels of `task`; a task with fewer than two classes is an error."""
    if task not in labels.columns:
        raise InputError(f"classification task {task!r} has no column in the labels")
    col = labels[task]
    ok = col.notna().to_numpy()
    y = label_strings(col[ok]).to_numpy(dtype=object).astype(str)
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise InputError(
            f"task {task!r} has {len(classes)} class(es) {classes} among {int(ok.sum())} "
            "labelled cases with embeddings; a classifier needs at least two",
            hint="check the label column or drop the task",
        )
    return ClassTarget(np.flatnonzero(ok), y, classes, int((~ok).sum()))


def survival_target(labels: pd.DataFrame, task: str) -> SurvTarget:
    """Time/event of `task` (validated by `survival_arrays`); needs at least one event."""
    ids, time, event = survival_arrays(labels, task)
    pos = pd.Index(labels["case_id"].astype(str)).get_indexer(ids)
    if not event.any():
        raise InputError(f"survival task {task!r} has no events; a C-index is undefined")
    return SurvTarget(pos, time, event, int(len(labels) - len(ids)))


@dataclass
class Joined:
    """Embeddings of one method joined to the labels, one row per case."""

    labels: pd.DataFrame  # rows aligned with X
    X: np.ndarray
    counts: dict = field(default_factory=dict)


def case_embeddings(meta: pd.DataFrame, X: np.ndarray) -> tuple[pd.Index, np.ndarray, dict]:
    """One embedding per case: H&E rows if a stain column says so; several slides are averaged."""
    meta = meta.reset_index(drop=True)
    counts = {"n_embedding_rows": len(meta)}
    if "stain" in meta.columns:
        stain = meta["stain"].astype(str).str.upper()
        if (stain == HE).any() and (stain != HE).any():
            keep = (stain == HE).to_numpy()
            counts["non_he_rows_ignored"] = int((~keep).sum())
            meta, X = meta[keep].reset_index(drop=True), X[keep]
    case = meta["case_id"].astype(str).to_numpy()
    uniq, inv = np.unique(case, return_inverse=True)
    counts["cases_with_several_slides_averaged"] = int((np.bincount(inv) > 1).sum())
    if len(uniq) == len(case):
        order = np.argsort(case, kind="stable")
        return pd.Index(case[order]), np.asarray(X[order], dtype=np.float64), counts
    sums = np.zeros((len(uniq), X.shape[1]))
    np.add.at(sums, inv, X)
    return pd.Index(uniq), sums / np.bincount(inv)[:, None], counts


def join(
    meta: pd.DataFrame, X: np.ndarray, labels: pd.DataFrame, cases: Sequence[str] | None = None
) -> Joined:
    """Inner join on case_id (sorted by case_id, deterministic); mismatches are counted.

    `cases` restricts the join further (the comparison of several methods uses the cases all of
    them have, so their scores are paired).
    """
    idx, E, counts = case_embeddings(meta, X)
    lab_ids = pd.Index(labels["case_id"].astype(str))
    counts["labels_without_embedding"] = int((~lab_ids.isin(idx)).sum())
    counts["embeddings_without_labels"] = int((~idx.isin(lab_ids)).sum())
    common = idx[idx.isin(lab_ids)]
    if cases is not None:
        common = common[common.isin(pd.Index(cases))]
    common = common.sort_values()
    if len(common) == 0:
        raise InputError(
            "no case_id is both in the embeddings and in the labels",
            hint="check that both tables use the same case ids",
        )
    counts["n_cases"] = len(common)
    lab = labels.assign(case_id=lab_ids).set_index("case_id").loc[common]
    lab.index.name = "case_id"
    lab = lab.reset_index()
    return Joined(lab, E[idx.get_indexer(common)], counts)


_POSITIVE = ("positive", "pos", "high", "yes", "true", "1", "+", "mutant", "dead", "event")


def encode_labels(y) -> tuple[np.ndarray, np.ndarray]:
    """(classes, y_idx). Sorted, except that for two classes a recognisable positive label
    (positive, high, 1, yes …) comes second, so it is the 'positive' class of ROC curves."""
    y = np.asarray(y).astype(str)
    classes = np.unique(y)
    lows = [c.strip().lower() for c in classes]
    if len(classes) == 2 and lows[0] in _POSITIVE and lows[1] not in _POSITIVE:
        classes = classes[::-1].copy()
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, np.array([lookup[v] for v in y], dtype=int)


def drop_missing(y, *arrays):
    """Drop rows whose label is missing (None/NaN/empty) — never let 'nan' become a class.

    Returns (y, *arrays, n_dropped) with the same rows kept in every array.
    """
    y = np.asarray(y, dtype=object)
    missing = pd.isna(y) | (pd.Series(y).astype(str).str.strip() == "").to_numpy()
    keep = ~missing
    kept = [None if a is None else np.asarray(a)[keep] for a in arrays]
    y_str = label_strings(pd.Series(y[keep])).to_numpy(dtype=object).astype(str)
    return (y_str, *kept, int(missing.sum()))
