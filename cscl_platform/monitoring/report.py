"""The Evidently 0.7 report of a drift plan: `drift.html`, every signal side by side.

The numbers are the library's (`cscl.monitoring.drift`); this module only shows them with
Evidently's pictures. The report runs the same tests on the same columns of the same plan
(`EmbeddingsDrift` with the domain-classifier method on the pooled-PCA columns, `ValueDrift` per
QC, prediction and label column), so its values equal drift.json's; a test checks that.

Speed: Evidently draws the embedding picture with a t-SNE of up to 2,500 + 2,500 rows (minutes on
2 cores, and slower still when OpenMP oversubscribes a shared machine). While our report renders,
the picture uses a 2-D PCA projection instead (`_pca_picture`); the drift score is not affected.
BLAS/OpenMP threads are capped at the CPUs this process may use.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.metrics.data_drift import embeddings_drift
from evidently.legacy.metrics.data_drift.embedding_drift_methods import model
from evidently.metrics import EmbeddingsDrift, ValueDrift
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from cscl.monitoring.drift import EMB, DriftPlan, embedding_planned


class _PCA2D:
    """Stand-in for sklearn's TSNE in Evidently's embedding picture: a seeded 2-D PCA."""

    def __init__(self, n_components: int = 2, **_: Any):
        self.n_components = n_components

    def fit_transform(self, X: Any) -> np.ndarray:
        return PCA(n_components=self.n_components, random_state=0).fit_transform(np.asarray(X))


@contextlib.contextmanager
def _pca_picture():
    """Swap the t-SNE of Evidently's EmbeddingsDrift picture for PCA; cap native threads."""
    saved = embeddings_drift.TSNE
    embeddings_drift.TSNE = _PCA2D
    try:
        with threadpool_limits(limits=max(1, min(2, len(os.sched_getaffinity(0))))):
            yield
    finally:
        embeddings_drift.TSNE = saved


def render_report(plan: DriftPlan) -> Any:
    """Run the plan's tests as one Evidently Report; returns its snapshot (`save_html`)."""
    metrics: list[Any] = []
    if embedding_planned(plan):
        # bootstrap off: the threshold is ours (null AUC); projection done in the plan
        metrics.append(EmbeddingsDrift(embeddings_name=EMB, drift_method=model(bootstrap=False)))
    metrics += [ValueDrift(column=c, method=m, threshold=t) for _, c, m, t, _ in plan.columns]
    definition = DataDefinition(
        numerical_columns=plan.num_cols,
        categorical_columns=plan.cat_cols,
        embeddings={EMB: plan.emb_cols},
    )
    with _pca_picture():
        return Report(metrics).run(
            reference_data=Dataset.from_pandas(plan.ref_df, data_definition=definition),
            current_data=Dataset.from_pandas(plan.cur_df, data_definition=definition),
        )


def report_values(snapshot: Any) -> dict[str, float]:
    """The report's value per test, keyed like `cscl.monitoring.drift.drift_values`."""
    values: dict[str, float] = {}
    for m in snapshot.dict()["metrics"]:
        cfg, v = m["config"], m["value"]
        values[cfg.get("column") or cfg.get("embeddings_name")] = (
            float(v) if isinstance(v, int | float) else float("nan")
        )
    return values


def write_report_html(plan: DriftPlan, path: Path) -> None:
    """drift.html of the plan."""
    render_report(plan).save_html(str(path))
