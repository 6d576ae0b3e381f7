"""The platform side of drift monitoring: what needs Evidently, Kubeflow or a CI service.

- `run`: `run_monitoring(...)` — one monitoring run (verdict, drift.html, drift.json, maybe one
  retraining); what `cscl monitor` and the `monitor_drift` component call. `drift_metrics`.
- `report`: the Evidently 0.7 report of a `cscl.monitoring.drift.DriftPlan` (drift.html).
- `retraining` / `trigger`: start one retraining per window via `kfp.Client` or a GitHub
  workflow dispatch, idempotent through `cscl.monitoring.state`.
- `demo`: `demo_step(ctx)`, the monitoring step of `make demo`.

The statistics, verdicts, reference sets, log reader, policy and state are the library's
(`cscl.monitoring`). See docs/MONITORING.md.
"""
