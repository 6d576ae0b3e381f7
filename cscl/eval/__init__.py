"""Evaluation of slide embeddings: few-shot probe (MADELEINE), k-fold probe with bootstrap CIs
(HistoStainAlign), survival (Cox, C-index, Kaplan–Meier), HTML report, and linear task heads for
serving. Submodules import sklearn lazily enough that `import cscl.eval` stays cheap."""

from __future__ import annotations

__all__ = [
    "apply_heads",
    "classification_artifacts",
    "evaluate",
    "few_shot",
    "fit_heads",
    "flat_metrics",
    "kfold_eval",
    "load_heads",
    "save_heads",
    "survival_eval",
]


def __getattr__(name: str):
    if name in ("evaluate", "flat_metrics", "classification_artifacts"):
        from cscl.eval import run

        return getattr(run, name)
    if name == "few_shot":
        from cscl.eval.fewshot import few_shot

        return few_shot
    if name == "kfold_eval":
        from cscl.eval.kfold import kfold_eval

        return kfold_eval
    if name == "survival_eval":
        from cscl.eval.survival import survival_eval

        return survival_eval
    if name in ("fit_heads", "apply_heads", "save_heads", "load_heads"):
        from cscl.eval import heads

        return getattr(heads, name)
    raise AttributeError(f"module 'cscl.eval' has no attribute {name!r}")
