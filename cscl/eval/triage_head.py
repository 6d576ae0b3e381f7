"""The served IHC triage: per IHC-status head, a calibration map and an operating point, fitted at
packaging time and applied per slide with numpy only.

Fitting (`fit_triage`, scikit-learn's `CalibratedClassifierCV(method="sigmoid", ensemble=False)`
scheme): out-of-fold probabilities of the same probe recipe as the head (cscl.eval.kfold, same
seed and C search) on every labelled reference case → one Platt map on all of them → the
threshold = the largest calibrated probability that keeps `target_sensitivity` of the positive
reference cases at or above it. The map is applied to the final head (fitted on all cases), whose
in-sample probabilities would be overconfident. Stored as `heads.json` `<task>.triage`; a head
without it (older bundles, too few cases) serves no triage.

Serving (`triage_decisions`): "skip IHC" when the calibrated probability is below the threshold,
"stain" otherwise — a pre-screen that supports the pathologist's decision, never replaces it.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cscl.errors import InputError, TooFewCases
from cscl.eval.calibration import PlattMap, fit_platt
from cscl.eval.heads import head_scores
from cscl.eval.kfold import kfold_eval
from cscl.eval.tasks import CLASSIFICATION, Task, classification_target
from cscl.eval.triage import (
    check_sensitivity,
    operating_rows,
    positives,
    sensitivity_threshold,
    triage_marker,
)

log = logging.getLogger(__name__)

DEFAULT_TRIAGE_SENSITIVITY = 0.95
PACKAGE_FOLDS = 5
STAIN, SKIP = "stain", "skip IHC"


def fit_triage(
    X: np.ndarray,
    y,
    task: str,
    classes: list[str],
    *,
    target_sensitivity: float = DEFAULT_TRIAGE_SENSITIVITY,
    seed: int = 0,
    n_iter: int = 10,
    inner_folds: int = 5,
    folds: int = PACKAGE_FOLDS,
) -> dict:
    """The `triage` entry of one IHC-status head (see the module docstring). Raises
    TooFewCases when a class has fewer than MIN_PER_CLASS cases, InputError when the task is
    not a binary `<marker>_status` task."""
    target = check_sensitivity(target_sensitivity)
    found = triage_marker(task, list(classes))
    if found is None:
        raise InputError(f"task {task!r} {classes} is not a binary <marker>_status task")
    marker, positive = found
    y = np.asarray(y).astype(str)
    pos = positives(y, positive, task, "triage needs", "reference cases",
                    "package with more labelled cases, or --triage-sensitivity 0")  # fmt: skip
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    r = kfold_eval(
        X, y, folds=folds, seed=seed, n_iter=n_iter, inner_folds=inner_folds, n_boot=0, task=task
    )
    oof = r.predictions
    pos = oof["y_true"].to_numpy(str) == positive
    cal = fit_platt(oof[f"prob_{positive}"].to_numpy(float), pos)
    p = cal(oof[f"prob_{positive}"].to_numpy(float))
    point = {k: float(v[0]) for k, v in operating_rows(p, pos, target).items()}
    return {
        "marker": marker,
        "positive_class": positive,
        "calibration": {
            **cal.as_dict(),
            "input": f"logit of the head's probability of {positive!r}",
            "fitted_on": f"out-of-fold probabilities of {len(p)} reference cases ({folds} folds)",
        },
        "target_sensitivity": target,
        "threshold": sensitivity_threshold(p, pos, target),
        "reference": {
            "n_cases": int(len(p)),
            "n_positive": n_pos,
            "n_negative": n_neg,
            "folds": folds,
            "skip_fraction": point["skip_fraction"],
            "npv": None if np.isnan(point["npv"]) else point["npv"],
            "missed_positives": int(point["missed_positives"]),
            "sensitivity": point["sensitivity"],
        },
    }


def with_triage(
    heads: dict,
    X: np.ndarray,
    labels: pd.DataFrame,
    tasks: list[Task],
    target_sensitivity: float = DEFAULT_TRIAGE_SENSITIVITY,
    *,
    seed: int = 0,
    n_iter: int = 10,
) -> tuple[dict, list[str]]:
    """(heads with a `triage` entry on every IHC-status head that has enough cases, why the
    others have none). `labels` rows match the rows of X, as for fit_heads."""
    out, notes = dict(heads), []
    for task in tasks:
        head = heads.get(task.name)
        if task.kind != CLASSIFICATION or not head or not triage_marker(task.name, head["classes"]):
            continue
        tgt = classification_target(labels.reset_index(drop=True), task.name)
        try:
            tri = fit_triage(
                np.asarray(X, np.float64)[tgt.index], tgt.y, task.name, head["classes"],
                target_sensitivity=target_sensitivity, seed=seed, n_iter=n_iter,
            )  # fmt: skip
        except TooFewCases as exc:
            notes.append(exc.message)
            log.warning("no IHC triage for %s: %s", task.name, exc.message)
            continue
        out[task.name] = {**head, "triage": tri}
    return out, notes


def _note(tri: dict, p: float, decision: str) -> str:
    ref, t = tri["reference"], tri["threshold"]
    who = f"{tri['marker']}-{tri['positive_class']}"
    rule = (
        f"threshold {t:.3f} keeps {100 * tri['target_sensitivity']:.0f} % of {who} reference "
        f"cases above it; on the {ref['n_cases']} reference cases (out of fold) it skipped "
        f"{100 * ref['skip_fraction']:.0f} % of stains and missed {ref['missed_positives']} of "
        f"{ref['n_positive']} positives"
    )
    if decision == SKIP:
        return (
            f"calibrated P({who}) {p:.3f} < {t:.3f}: the {tri['marker']} stain could be skipped "
            f"(a pre-screen for the pathologist, not a diagnosis); {rule}"
        )
    return f"calibrated P({who}) {p:.3f} ≥ {t:.3f}: stain as usual; {rule}"


def triage_decisions(heads: dict, embedding: np.ndarray) -> dict:
    """{task: {probability_positive, positive_class, threshold, target_sensitivity, decision,
    note}} for every head with a `triage` entry, for ONE slide embedding ({} when none has)."""
    out = {}
    for task, head in heads.items():
        tri = head.get("triage") if isinstance(head, dict) else None
        if not tri:
            continue
        s = head_scores(head, np.asarray(embedding, np.float64))[0]
        p_raw = float(s[list(head["classes"]).index(tri["positive_class"])])
        p = float(PlattMap.from_dict(tri["calibration"])(np.array([p_raw]))[0])
        decision = STAIN if p >= tri["threshold"] else SKIP
        out[task] = {
            "probability_positive": p,
            "positive_class": tri["positive_class"],
            "threshold": float(tri["threshold"]),
            "target_sensitivity": float(tri["target_sensitivity"]),
            "decision": decision,
            "note": _note(tri, p, decision),
        }
    return out
