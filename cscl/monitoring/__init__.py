"""Drift monitoring: inference logs of a model version vs the reference set stored with it.

- `reference`: `write_reference(path, embeddings, predictions, qc_records, model_version)` /
  `load_reference(uri)` — `reference.parquet` in the model bundle.
- `logs`: `read_window(prefix, model_version, since, until, ...)` — streamed, bad records counted.
- `drift`: `compute_drift(ref, window, policy)` — Evidently 0.7 report + per-signal verdicts.
- `policy`: `load_policy(yaml)` — signals, thresholds, minimum samples, cool-down.
- `trigger` / `state`: retraining via kfp.Client or a CI workflow dispatch, at most once per window.
- `run`: `run_monitoring(...)` (what `cscl monitor` and the KFP component call),
  `demo_monitoring(...)`; `demo.demo_step(ctx)` for `make demo`.

See docs/MONITORING.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_monitoring", "demo_monitoring", "write_reference", "load_reference"]


def __getattr__(name: str) -> Any:  # lazy: `import cscl.monitoring` must not import Evidently
    if name in {"run_monitoring", "demo_monitoring"}:
        from cscl.monitoring import run

        return getattr(run, name)
    if name in {"write_reference", "load_reference"}:
        from cscl.monitoring import reference

        return getattr(reference, name)
    raise AttributeError(name)
