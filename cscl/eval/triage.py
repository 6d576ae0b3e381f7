"""The IHC triage report: how many IHC stains an H&E-based pre-screen could skip, at what risk.

For a binary IHC-status task (`er_status`, `pgr_status`, `her2_status`, `ki67_status`, …: a task
named `<marker>_status` whose positive class reads "positive" or "high") the k-fold probe's pooled
out-of-fold probabilities are calibrated (`cscl.eval.calibration`: Platt, cross-fitted on the
outer folds), judged (Brier score with a bootstrap CI, reliability curve) and turned into an
operating table: for each target sensitivity s (0.90, 0.95, 0.99) the threshold t is the largest t
with sensitivity(p ≥ t) ≥ s — cases with p < t would not be stained — with the fraction of cases
skipped, the negative predictive value of skipping and the positives missed.

Why the threshold is recomputed inside every bootstrap resample: a threshold chosen on the same
cases it is judged on is optimistic; choosing it again in each resample makes the CI include the
uncertainty of the choice. Resample indices are `cscl.eval.bootstrap.resample_indices(n, B, seed)`,
the same as every other bootstrap of the evaluation, so two embeddings tables get paired resamples.
"""

from __future__ import annotations

import math
import re

import numpy as np

from cscl.errors import InputError, TooFewCases
from cscl.eval.bootstrap import resample_indices, summarize
from cscl.eval.calibration import (
    brier,
    brier_rows,
    cross_fitted,
    reliability,
)

TARGET_SENSITIVITIES = (0.90, 0.95, 0.99)
MIN_PER_CLASS = 10  # below this a calibration map and a sensitivity are noise, not a report
POSITIVE_STATUS = ("positive", "pos", "high", "+", "yes", "true", "1")
_STATUS_TASK = re.compile(r"^(?P<marker>[A-Za-z0-9]+)_status$")
CALIBRATION_METHOD = "platt, cross-fitted on the outer folds"


def check_sensitivity(target: float) -> float:
    """A target sensitivity strictly between 0 and 1 (InputError otherwise)."""
    if not 0.0 < float(target) < 1.0:
        raise InputError(
            f"triage sensitivity {target} is not between 0 and 1",
            hint="pass e.g. 0.95 (--triage-sensitivity 0 / --triage-sensitivities '' for none)",
        )
    return float(target)


def triage_marker(task: str, classes: list[str]) -> tuple[str, str] | None:
    """(marker, positive class) when `task` is a binary IHC-status task, else None.

    A task qualifies by its name (`<marker>_status`) and its two labels (one of them reads as
    positive: positive, high, +, …); the marker is the name's prefix in upper case (ER, HER2).
    """
    m = _STATUS_TASK.match(task)
    if not m or len(classes) != 2:
        return None
    found = [c for c in classes if c.strip().lower() in POSITIVE_STATUS]
    if len(found) != 1:
        return None
    return m["marker"].upper(), found[0]


def sensitivity_threshold(p: np.ndarray, positive: np.ndarray, target: float) -> float:
    """The largest t with sensitivity(p ≥ t) ≥ target: the k-th highest positive score,
    k = ⌈target · positives⌉."""
    ps = np.sort(np.asarray(p, float)[np.asarray(positive, bool)])[::-1]
    if len(ps) == 0:
        return math.nan
    return float(ps[_needed(target, len(ps)) - 1])


def _needed(target: float, n_pos):
    """Positives that must score at or above the threshold (at least one)."""
    return np.maximum(np.ceil(np.asarray(target) * n_pos - 1e-9).astype(int), 1)


def operating_rows(p: np.ndarray, pos: np.ndarray, target: float) -> dict[str, np.ndarray]:
    """Operating point of every row of (B, n) probabilities / outcomes: threshold, fraction of
    cases skipped (p < t), negative predictive value of the skipped cases, positives missed,
    sensitivity and specificity achieved. NaN where a row has no positive (or no skipped case,
    for the NPV)."""
    p, pos = np.atleast_2d(p).astype(float), np.atleast_2d(pos).astype(bool)
    n_pos = pos.sum(axis=1)
    ranked = -np.sort(-np.where(pos, p, -np.inf), axis=1)  # positives' scores, high → low
    k = np.minimum(_needed(target, n_pos), np.maximum(n_pos, 1))
    t = ranked[np.arange(len(p)), k - 1]
    t[n_pos == 0] = np.nan
    skip = p < t[:, None]
    n_skip = skip.sum(axis=1)
    missed = (skip & pos).sum(axis=1)
    n_neg = (~pos).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "threshold": t,
            "skip_fraction": n_skip / p.shape[1],
            "npv": np.where(n_skip > 0, (n_skip - missed) / n_skip, np.nan),
            "missed_positives": missed.astype(float),
            "sensitivity": 1.0 - missed / n_pos,
            "specificity": np.where(n_neg > 0, (skip & ~pos).sum(axis=1) / n_neg, np.nan),
        }
    for v in out.values():
        v[n_pos == 0] = np.nan
    return out


def operating_table(
    p: np.ndarray,
    positive: np.ndarray,
    targets=TARGET_SENSITIVITIES,
    n_boot: int = 1000,
    seed: int = 42,
) -> list[dict]:
    """One row per target sensitivity: point values on all cases, 95 % CIs from resamples in
    which the threshold is chosen again."""
    p, pos = np.asarray(p, float), np.asarray(positive, bool)
    idx = resample_indices(len(p), n_boot, seed)
    rows = []
    for target in targets:
        point = {k: float(v[0]) for k, v in operating_rows(p, pos, target).items()}
        boot: dict[str, list[np.ndarray]] = {k: [] for k in point}
        for start in range(0, n_boot, 250):  # (250, n) at a time: bounded memory
            sel = idx[start : start + 250]
            for k, v in operating_rows(p[sel], pos[sel], target).items():
                boot[k].append(v)
        row: dict = {"target_sensitivity": float(target)}
        for key in ("threshold", "skip_fraction", "npv", "missed_positives"):
            vals = np.concatenate(boot[key]) if boot[key] else np.zeros(0)
            row[key] = summarize(point[key], vals)
        row["n_skipped"] = int(round(point["skip_fraction"] * len(p)))
        row["sensitivity"] = point["sensitivity"]
        row["specificity"] = point["specificity"]
        rows.append(row)
    return rows


def positives(y, positive_class: str, task: str, what: str, cases: str, hint: str) -> np.ndarray:
    """Boolean mask of the positive cases; TooFewCases (a note, not an abort) when either class
    has fewer than MIN_PER_CLASS cases — the one rule of evaluation and packaging."""
    pos = np.asarray(y).astype(str) == str(positive_class)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        raise TooFewCases(
            f"task {task!r}: {what} at least {MIN_PER_CLASS} {cases} per class, "
            f"found {n_pos} {positive_class} and {n_neg} other",
            hint=hint,
        )
    return pos


def ihc_triage(
    p_raw: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    *,
    task: str,
    positive_class: str,
    marker: str | None = None,
    targets=TARGET_SENSITIVITIES,
    n_boot: int = 1000,
    boot_seed: int = 42,
) -> dict:
    """The triage section of one task and embeddings table (metrics.json
    `tasks[t].results[method].kfold.triage`) from the probe's out-of-fold probabilities of
    `positive_class` (`p_raw`), the labels `y` and the outer fold of each case.

    Raises TooFewCases when a class has fewer than MIN_PER_CLASS cases (a note, not an abort).
    """
    pos = positives(y, positive_class, task, "IHC triage needs", "cases", "add labelled cases")
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    p_raw = np.asarray(p_raw, float)
    p = cross_fitted(p_raw, pos, np.asarray(folds))
    idx = resample_indices(len(p), n_boot, boot_seed)
    chunks = [idx[s : s + 250] for s in range(0, n_boot, 250)]
    boot_brier = np.concatenate([brier_rows(p[c], pos[c]) for c in chunks] or [np.zeros(0)])
    prevalence = n_pos / len(p)
    section = {
        "marker": marker or task.removesuffix("_status").upper(),
        "positive_class": str(positive_class),
        "n_cases": int(len(p)),
        "n_positive": n_pos,
        "n_negative": n_neg,
        "calibration": {
            "method": CALIBRATION_METHOD,
            "brier": summarize(brier(p, pos), boot_brier),
            "brier_uncalibrated": brier(p_raw, pos),
            "brier_prevalence_only": prevalence * (1 - prevalence),
            "reliability": reliability(p, pos),
            "reliability_uncalibrated": reliability(p_raw, pos),
        },
        "operating_points": operating_table(p, pos, targets, n_boot, boot_seed),
        "notes": [],
    }
    for row in section["operating_points"]:
        row["sentence"] = sentence(section, row)
        if _needed(row["target_sensitivity"], n_pos) >= n_pos:
            section["notes"].append(
                f"{n_pos} positives: {row['target_sensitivity']:.0%} sensitivity allows no missed "
                "positive in this cohort; more cases are needed to resolve it"
            )
    return section


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def sentence(section: dict, row: dict) -> str:
    """The operating point in plain words, e.g. "At 95 % sensitivity for ER-positive cases,
    31 % (24–38 %) of ER stains could be skipped; 2 of 160 positives would be missed"."""
    marker, sk, miss = section["marker"], row["skip_fraction"], row["missed_positives"]
    ci = ""
    if sk.get("ci_low") is not None:
        ci = f" ({100 * sk['ci_low']:.0f}–{100 * sk['ci_high']:.0f} %)"
    text = (
        f"At {100 * row['target_sensitivity']:.0f} % sensitivity for {marker}-"
        f"{section['positive_class']} cases, {_pct(sk['value'])}{ci} of {marker} stains could be "
        f"skipped; {int(miss['value'])} of {section['n_positive']} positives would be missed"
    )
    npv = row["npv"]["value"]
    if npv is not None and not math.isnan(npv):
        text += f" (NPV {100 * npv:.1f} %)"
    return text
