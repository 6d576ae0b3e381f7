"""Drift monitoring, platform-independent: inference logs of a model version vs the reference
set stored with it, judged under a policy. No Evidently, Kubeflow or CI client here: the HTML
report, the retraining trigger and the run that ties them together are in
`cscl_platform.monitoring`.

- `reference`: `write_reference(path, embeddings, predictions, qc_records, model_version)` /
  `load_reference(uri)` — `reference.parquet` in the model bundle (written by `cscl package`).
- `logs`: `read_window(prefix, model_version, since, until, ...)` — streamed, bad records counted;
  `resolve_window`, `prefix_of`.
- `labels`: `load_window_labels(uri, window)` — labels that arrived later, joined to a window.
- `drift`: `compute_drift(ref, window, policy)` — planned tests, their values, per-signal verdicts.
- `stats`: the tests themselves (KS, chi-square, …, the domain classifier's AUC) in scipy/sklearn.
- `verdict`: `judge(ref, window, policy)` — "insufficient data" / "no drift" / "drift" and why.
- `policy`: `load_policy(yaml)` — signals, thresholds, minimum samples, cool-down.
- `state`: the create-only per-window claim that makes retraining at most once per window.
- `schema`: flat column names shared by the reference set and the logs.
- `simulate`: a generative model of log records (tests, benchmark).

See docs/MONITORING.md.
"""
