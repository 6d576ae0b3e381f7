"""Evaluation of slide embeddings: few-shot probe (MADELEINE), k-fold probe with bootstrap CIs
(HistoStainAlign), survival (Cox, C-index, Kaplan–Meier), HTML report, the quality score and the
candidate-vs-current comparison, linear task heads for serving, and the IHC triage report
(calibrated probabilities, stains an H&E pre-screen could skip). Names are resolved lazily so
`import cscl.eval` stays cheap (no sklearn)."""

from __future__ import annotations

import importlib

_HOMES = {
    "evaluate": "run",
    "EvalConfig": "protocols",
    "protocol": "protocols",
    "flat_metrics": "metrics",
    "method_values": "metrics",
    "classification_artifacts": "metrics",
    "quality_score": "quality",
    "score_summary": "quality",
    "compare_models": "quality",
    "few_shot": "fewshot",
    "kfold_eval": "kfold",
    "survival_eval": "survival",
    "fit_heads": "heads",
    "apply_heads": "heads",
    "save_heads": "heads",
    "load_heads": "heads",
    "ihc_triage": "triage",
    "triage_decisions": "triage_head",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"cscl.eval.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'cscl.eval' has no attribute {name!r}")
