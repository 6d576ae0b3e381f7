"""Case labels for supervised objectives (HistoStainAlign CE, supervised ABMIL)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cscl.errors import InputError

# label task -> IHC stain whose slide carries that marker (HistoStainAlign pairs them)
TASK_STAIN = {"er_status": "ER", "pgr_status": "PGR", "her2_status": "HER2", "ki67_status": "KI67"}


def case_labels(case_ids: list[str], labels: pd.DataFrame, task: str) -> tuple[np.ndarray, list]:
    """(y int64 per case, -1 where unknown; sorted class names)."""
    if task not in labels.columns:
        raise InputError(
            f"label task {task!r} is not a column of the labels table",
            hint=f"columns: {[c for c in labels.columns if c != 'case_id']}",
        )
    lab = labels.set_index(labels["case_id"].astype(str))[task]
    vals = [lab.get(c) for c in case_ids]
    known = sorted({str(v) for v in vals if v is not None and not pd.isna(v)})
    if len(known) < 2:
        raise InputError(f"label task {task!r} has fewer than 2 classes among training cases")
    lut = {k: i for i, k in enumerate(known)}
    y = np.array([lut[str(v)] if v is not None and not pd.isna(v) else -1 for v in vals])
    if (y >= 0).sum() < 2:
        raise InputError(f"label task {task!r}: fewer than 2 training cases have a label")
    return y.astype(np.int64), known


def holdout_split(y: np.ndarray, frac: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, validation) indices of the labelled items (y >= 0), stratified by class.

    Each class gives round(frac × its size) items to validation, but always keeps one for
    training; classes of one item stay in training. Seeded and independent of global RNG state.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y[y >= 0]):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = min(int(round(frac * len(idx))), len(idx) - 1)
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return sorted(train), sorted(val)
