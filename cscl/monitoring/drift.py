"""Drift between a reference set and a window of inference logs: which tests run on which
columns (`plan_drift`), their values (`drift_values`, our own scipy/sklearn code in
`cscl.monitoring.stats`) and the per-signal verdicts under a policy (`decide`);
`compute_drift` does all three. The Evidently HTML report of the same plan is rendered by the
platform layer (`cscl_platform.monitoring.report`), which shows the same numbers.

- embedding: a domain classifier learns to tell reference from current slides on the top
  principal components of reference and current *together*; its held-out ROC-AUC is the drift
  score. (A PCA fitted on the reference only — Evidently's own `pca_components` — projects away a
  shift in a direction the training slides never varied in, such as a new stain or scanner: on
  512-d embeddings it caught 0 of 10 stain shifts that the pooled PCA catches 9 of 10 times. The
  pooled projection ignores which rows are which, so the null below still holds.) When nothing
  drifted the classifier's held-out scores are independent of the held-out labels, so the AUC is
  distributed like that of random scores: mean 0.5, variance (n0 + n1 + 1) / (12 n0 n1) for n1
  reference and n0 current rows in the held-out half. The threshold is that null's
  (1 - false_alarm_rate) quantile (normal approximation), floored at `min_auc`. It works in any
  embedding dimension, is scale-free, and "0.5 = indistinguishable" reads well in a report. (MMD
  was the alternative; Evidently's MMD bootstrap defaults to the 5th percentile and uses a
  different kernel bandwidth for the statistic and its null, so its false-alarm rate is not what
  the policy says.)
- qc / predictions: a two-sample test per column (KS / chi-square p-values by default).
- target: a test per label column when labels arrived for enough requests.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.decomposition import PCA

from cscl.monitoring.logs import LogWindow
from cscl.monitoring.policy import CAT_METHODS, NUM_METHODS, Policy
from cscl.monitoring.reference import ReferenceSet
from cscl.monitoring.schema import LABEL_PREFIX, QC_CATEGORICAL, QC_NUMERIC
from cscl.monitoring.stats import column_test, domain_classifier_auc, split_counts

EMB = "slide_embedding"


@dataclass
class SignalResult:
    """One signal's outcome: status is "drift", "ok" or "skipped" (with `reason`)."""

    name: str
    status: str
    value: float | None = None
    threshold: float | None = None
    method: str = ""
    reason: str = ""
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "status": self.status,
            "value": self.value,
            "threshold": self.threshold,
            "method": self.method,
            "reason": self.reason,
            "samples": self.samples,
        }
        if self.columns:
            d["columns"] = self.columns
            d["drifted_columns"] = [c for c, v in self.columns.items() if v["drifted"]]
        return d


def null_auc_threshold(n_ref: int, n_cur: int, false_alarm_rate: float, min_auc: float) -> float:
    """Domain-classifier AUC above which we call drift (see module docstring)."""
    _, _, n1, n0 = split_counts(n_ref, n_cur)
    if n0 == 0 or n1 == 0:
        return 1.0
    sd = math.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1))
    return max(float(min_auc), 0.5 + float(norm.ppf(1 - false_alarm_rate)) * sd)


def _pooled_pcs(
    ref_df: pd.DataFrame, cur_df: pd.DataFrame, cols: list[str], k: int
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Replace the embedding columns by their top-k principal components of ref + current."""
    both = np.vstack([ref_df[cols].to_numpy(np.float64), cur_df[cols].to_numpy(np.float64)])
    pcs = PCA(n_components=k, random_state=0).fit_transform(both)
    pc_cols = [f"emb_pc_{i}" for i in range(k)]
    n = len(ref_df)

    def swap(df: pd.DataFrame, z: np.ndarray) -> pd.DataFrame:
        return pd.concat([pd.DataFrame(z, columns=pc_cols), df.drop(columns=cols)], axis=1)

    return swap(ref_df, pcs[:n]), swap(cur_df, pcs[n:]), pc_cols


def _emb_cols(d: int) -> list[str]:
    return [f"emb_{i}" for i in range(d)]


def build_frames(
    ref: ReferenceSet, cur: LogWindow, labels: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current tables with the same columns (embeddings, QC, predictions, labels).

    `labels` (optional): `label__<task>` columns aligned with `cur`'s rows (NaN = not labelled).
    """
    d = ref.embeddings.shape[1]

    def frame(emb, qc_num, vendors, preds, pcols):
        parts = [
            pd.DataFrame(emb, columns=_emb_cols(d)),
            pd.DataFrame(qc_num, columns=list(QC_NUMERIC)),
            pd.DataFrame({QC_CATEGORICAL[0]: vendors}),
            pd.DataFrame(preds, columns=pcols),
        ]
        return pd.concat(parts, axis=1)

    ref_df = frame(
        ref.embeddings,
        ref.qc[list(QC_NUMERIC)].to_numpy(np.float32),
        ref.qc[QC_CATEGORICAL[0]].astype(str).tolist(),
        ref.predictions.to_numpy(np.float32),
        ref.pred_columns,
    )
    cur_df = frame(cur.embeddings, cur.qc_numeric, cur.vendors, cur.predictions, cur.pred_columns)
    if labels is not None and ref.labels is not None:
        for col in labels.columns:
            if col in ref.labels.columns:
                ref_df[col] = ref.labels[col].to_numpy(object)
                cur_df[col] = labels[col].to_numpy(object)
    return ref_df, cur_df


def _is_p(method: str, categorical: bool) -> bool:
    return (CAT_METHODS if categorical else NUM_METHODS)[method] == "p"


@dataclass
class DriftPlan:
    """Which tests run on which columns of which tables; the signals start undecided.

    The Evidently report (platform layer) is rendered from the same plan, so both show the same
    tests on the same (pooled-PCA) columns.
    """

    ref_df: pd.DataFrame
    cur_df: pd.DataFrame
    emb_cols: list[str]
    num_cols: list[str]
    cat_cols: list[str]
    pca_k: int
    signals: dict[str, SignalResult]
    columns: list[tuple[str, str, str, float, bool]]  # (signal, column, method, thr, is_p)


def plan_drift(
    ref: ReferenceSet, cur: LogWindow, policy: Policy, labels: pd.DataFrame | None = None
) -> DriftPlan:
    """Which tests run on which columns, and the initial (undecided) signal results."""
    ref_df, cur_df = build_frames(ref, cur, labels)
    d = ref.embeddings.shape[1]
    n_ref, n_cur = len(ref_df), len(cur_df)
    sizes = {"reference": n_ref, "current": n_cur}
    label_cols = [c for c in cur_df.columns if c.startswith(LABEL_PREFIX)]
    signals: dict[str, SignalResult] = {}
    plan: list[tuple[str, str, str, float, bool]] = []
    k = 0
    emb_cols = _emb_cols(d)
    if policy.enabled("embedding") and min(split_counts(n_ref, n_cur)) < 2:
        signals["embedding"] = SignalResult(
            "embedding",
            "skipped",
            reason="too few rows for the domain classifier's train/held-out halves",
            samples=sizes,
        )
    elif policy.enabled("embedding"):
        p = policy.signal("embedding")
        k = max(1, min(int(p["pca_components"]), d, n_ref + n_cur - 1))
        if k < d:
            ref_df, cur_df, emb_cols = _pooled_pcs(ref_df, cur_df, emb_cols, k)
        thr = null_auc_threshold(n_ref, n_cur, float(p["false_alarm_rate"]), float(p["min_auc"]))
        signals["embedding"] = SignalResult(
            "embedding",
            "ok",
            threshold=thr,
            method=f"domain classifier ROC-AUC (pooled PCA {k})"
            if k < d
            else "domain classifier ROC-AUC",
            samples=sizes,
        )

    def add_columns(signal: str, cols: list[str], categorical: set[str]) -> None:
        p = policy.signal(signal)
        thr = float(p["threshold"])
        signals[signal] = SignalResult(signal, "ok", method="per-column", samples=sizes)
        for c in cols:
            cat = c in categorical
            m = p.get("cat_method", "chisquare") if cat else p.get("num_method", "ks")
            plan.append((signal, c, m, thr, _is_p(m, cat)))

    if policy.enabled("qc"):
        add_columns("qc", [*QC_NUMERIC, *QC_CATEGORICAL], set(QC_CATEGORICAL))
    if policy.enabled("predictions") and ref.pred_columns:
        add_columns("predictions", ref.pred_columns, set())
    if policy.enabled("target"):
        labelled = int(cur_df[label_cols].notna().any(axis=1).sum()) if label_cols else 0
        need = int(policy.signal("target").get("min_samples", policy.min_samples))
        if not label_cols:
            if labels is None:
                why = "no labels for this window (pass --labels when they arrive)"
            elif ref.labels is None:
                why = "the reference set has no labels"
            else:
                why = "no task in the labels file is labelled in the reference set"
            signals["target"] = SignalResult("target", "skipped", reason=why)
        elif labelled < need:
            signals["target"] = SignalResult(
                "target",
                "skipped",
                reason=f"{labelled} labelled requests < {need}",
                samples={"reference": n_ref, "labelled": labelled},
            )
        else:
            add_columns("target", label_cols, set(label_cols))
            signals["target"].samples = {"reference": n_ref, "labelled": labelled}
    return DriftPlan(
        ref_df,
        cur_df,
        emb_cols,
        [*QC_NUMERIC, *ref.pred_columns],
        [*QC_CATEGORICAL, *label_cols],
        k,
        signals,
        plan,
    )


def embedding_planned(plan: DriftPlan) -> bool:
    """Whether the plan runs the domain classifier (enough rows for both halves)."""
    s = plan.signals.get("embedding")
    return s is not None and s.status != "skipped"


def drift_values(plan: DriftPlan) -> dict[str, float]:
    """The value of every planned test: `EMB` → the domain classifier's AUC, column → score."""
    values: dict[str, float] = {}
    if embedding_planned(plan):
        values[EMB] = domain_classifier_auc(
            plan.ref_df[plan.emb_cols].to_numpy(), plan.cur_df[plan.emb_cols].to_numpy()
        )
    for _, col, method, _, _ in plan.columns:
        values[col] = column_test(method, plan.ref_df[col], plan.cur_df[col], col in plan.cat_cols)
    return values


def decide(plan: DriftPlan, values: dict[str, float], policy: Policy) -> dict[str, SignalResult]:
    """Per-signal verdicts from the test values (the plan itself is left undecided)."""
    signals = copy.deepcopy(plan.signals)
    if embedding_planned(plan):
        s = signals["embedding"]
        s.value = values.get(EMB)
        s.status = "drift" if s.value is not None and s.value > s.threshold else "ok"
    for signal, col, method, thr, is_p in plan.columns:
        v = values.get(col, float("nan"))
        drifted = bool(v < thr) if is_p else bool(v >= thr)
        signals[signal].columns[col] = {
            "value": None if math.isnan(v) else v,
            "threshold": thr,
            "method": method,
            "kind": "p_value" if is_p else "distance",
            "drifted": drifted,
        }
    for name in ("qc", "predictions", "target"):
        s = signals.get(name)
        if s is None or s.status == "skipped":
            continue
        p = policy.signal(name)
        drifted = [c for c, r in s.columns.items() if r["drifted"]]
        critical = [c for c in drifted if c in set(p.get("critical_columns", []))]
        need = int(p.get("min_drifted_columns", 1))
        s.value = float(len(drifted))
        s.threshold = float(need)
        s.status = "drift" if critical or len(drifted) >= need else "ok"
        s.reason = (
            f"critical column(s) drifted: {critical}"
            if critical
            else f"{len(drifted)} of {len(s.columns)} columns drifted (drift at >= {need})"
        )
    return signals


@dataclass
class DriftComputation:
    signals: dict[str, SignalResult]
    plan: DriftPlan  # what was tested: the Evidently report renders the same plan


def compute_drift(
    ref: ReferenceSet,
    cur: LogWindow,
    policy: Policy,
    labels: pd.DataFrame | None = None,
) -> DriftComputation:
    """Plan the tests, compute their values, decide each signal under `policy`."""
    plan = plan_drift(ref, cur, policy, labels)
    return DriftComputation(signals=decide(plan, drift_values(plan), policy), plan=plan)
