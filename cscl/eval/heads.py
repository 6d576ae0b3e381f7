"""Task heads for serving: final linear models fitted on every labelled case, stored as JSON.

Classification: the k-fold probe (StandardScaler + balanced logistic regression, C by the same
randomized search) with the scaler folded into the coefficients, so inference is
`softmax(X @ coef.T + intercept)` (binary: sigmoid of one logit). Survival: the Cox probe
(scaler → PCA → ridge Cox) folded into one vector, risk = (x - mean) @ coef. Inference needs
numpy only, no sklearn and no pickle.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from cscl.errors import InputError
from cscl.eval._threads import one_blas_thread
from cscl.eval.kfold import chosen_c, make_probe
from cscl.eval.survival import fit_cox
from cscl.eval.tasks import (
    CLASSIFICATION,
    Task,
    classification_target,
    encode_labels,
    parse_tasks,
    survival_target,
)
from cscl.io.storage import atomic_path

HEADS_FORMAT = "cscl-linear-heads/1"


def fold_scaler_into_lr(scaler, lr) -> tuple[np.ndarray, np.ndarray]:
    """(coef, intercept) on raw inputs equal to lr applied to scaler(x)."""
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_) if scaler.with_std else 1.0
    mean = scaler.mean_ if scaler.with_mean else 0.0
    coef = lr.coef_ / scale
    intercept = lr.intercept_ - (lr.coef_ * (mean / scale)).sum(axis=1)
    return coef, intercept


def classification_head(X: np.ndarray, y, *, seed: int, n_iter: int, inner_folds: int) -> dict:
    classes, y_idx = encode_labels(y)
    model, note = make_probe(y_idx, n_iter, inner_folds, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y_idx)
    pipe = getattr(model, "best_estimator_", model)
    coef, intercept = fold_scaler_into_lr(pipe.named_steps["scaler"], pipe.named_steps["lr"])
    head = {
        "type": "classification",
        "classes": [str(c) for c in classes],
        "link": "sigmoid" if len(classes) == 2 else "softmax",
        "coef": coef.tolist(),
        "intercept": intercept.tolist(),
        "C": chosen_c(model),
        "n_train": int(len(y_idx)),
        "class_counts": {str(c): int((y_idx == i).sum()) for i, c in enumerate(classes)},
    }
    if note:
        head["note"] = note
    return head


def survival_head(
    X: np.ndarray, time, event, *, n_components: int | None = None, alpha: float = 1.0
) -> dict:
    model = fit_cox(X, time, event, n_components, alpha)
    scaler, pca, cox = (model.named_steps[k] for k in ("scaler", "pca", "cox"))
    # risk = beta · (W ((x - mu)/s - m)) and PCA centring makes m = 0 after the scaler
    w = (pca.components_.T @ cox.coef_) / scaler.scale_
    offset = float(pca.mean_ @ (pca.components_.T @ cox.coef_))
    return {
        "type": "survival",
        "coef": w.tolist(),
        "mean": scaler.mean_.tolist(),
        "offset": -offset,
        "n_components": int(pca.n_components_),
        "alpha": float(alpha),
        "n_train": int(len(time)),
        "n_events": int(np.sum(event)),
        "risk": "higher = shorter survival (Cox linear predictor, 0 at the training mean)",
    }


@one_blas_thread
def fit_heads(
    X: np.ndarray,
    labels_df_aligned: pd.DataFrame,
    tasks: str | Iterable[str | Task],
    seed: int = 0,
    *,
    n_iter: int = 10,
    inner_folds: int = 5,
    n_components: int | None = None,
    alpha: float = 1.0,
) -> dict:
    """One head per task on all labelled cases. `labels_df_aligned` rows match the rows of X."""
    X = np.asarray(X, dtype=np.float64)
    labels = labels_df_aligned.reset_index(drop=True)
    if len(labels) != len(X):
        raise InputError(f"{len(X)} embeddings but {len(labels)} label rows; align them first")
    if "case_id" not in labels.columns:
        labels = labels.assign(case_id=[str(i) for i in range(len(labels))])
    heads: dict = {}
    for task in parse_tasks(tasks, labels):
        if task.kind == CLASSIFICATION:
            tgt = classification_target(labels, task.name)
            heads[task.name] = classification_head(
                X[tgt.index], tgt.y, seed=seed, n_iter=n_iter, inner_folds=inner_folds
            )
        else:
            st = survival_target(labels, task.name)
            heads[task.name] = survival_head(
                X[st.index], st.time, st.event, n_components=n_components, alpha=alpha
            )
    return heads


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def head_scores(head: dict, X: np.ndarray) -> np.ndarray:
    """(N, n_classes) probabilities, or (N,) risk scores, for a batch of embeddings."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    coef = np.asarray(head["coef"], dtype=np.float64)
    dim = coef.shape[-1]
    if X.shape[1] != dim:
        raise InputError(f"embedding has {X.shape[1]} dimensions but the head expects {dim}")
    if head["type"] == "survival":
        return (X - np.asarray(head["mean"])) @ coef + float(head.get("offset", 0.0))
    z = X @ coef.T + np.asarray(head["intercept"], dtype=np.float64)
    if coef.shape[0] == 1:
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    return _softmax(z)


def apply_heads(heads: dict, X: np.ndarray) -> dict:
    """Predictions of every head. One embedding (1-D) → floats; a batch (2-D) → lists.

    {task: {class: probability} for classification, {"risk_score": value} for survival}.
    """
    single = np.asarray(X).ndim == 1
    out = {}
    for task, head in heads.items():
        if task.startswith("_"):
            continue
        s = head_scores(head, X)
        if head["type"] == "survival":
            out[task] = {"risk_score": float(s[0]) if single else s.tolist()}
        else:
            out[task] = {
                c: (float(s[0, i]) if single else s[:, i].tolist())
                for i, c in enumerate(head["classes"])
            }
    return out


def save_heads(heads: dict, path: str | Path) -> Path:
    """Write heads.json atomically (JSON only — no pickle ever reaches serving)."""
    path = Path(path)
    doc = {"_format": HEADS_FORMAT, **heads}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return path


def load_heads(path: str | Path) -> dict:
    """Read and check heads.json."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read task heads {path}: {exc}") from exc
    doc.pop("_format", None)
    for task, head in doc.items():
        need = {"classification": ("classes", "coef", "intercept"), "survival": ("coef", "mean")}
        kind = head.get("type") if isinstance(head, dict) else None
        if kind not in need or any(k not in head for k in need[kind]):
            raise InputError(
                f"{path}: head {task!r} is malformed (type={kind!r})",
                hint="regenerate it with cscl.eval.heads.fit_heads",
            )
    return doc
