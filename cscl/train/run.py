"""`pretrain`: the one library entry point for training (CLI `cscl pretrain` and both pretrain
components call it): load the inputs, build the objective, `fit` it, write the run directory.

Run directory (see cscl.train.checkpoint): config.json = the objective's part (kind, stage, model
names + constructor configs, stains …) + "train" (the full frozen config) + "seed" + "data"
(built here once: fingerprint, extractor hash, encoder, case count, input locations) + "env"
(package versions, git commit) + fit's "history", "selection", "throughput", "train_seconds";
then one `<module>.pt` state dict per saved module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from cscl.data import CohortFeatures, load_cohort
from cscl.io.manifest import label_notes, load_labels
from cscl.train.checkpoint import save_run
from cscl.train.common import environment
from cscl.train.fit import FitConfig, FitResult, fit
from cscl.train.objective import Objective, TrainInputs
from cscl.train.registry import create_objective, objective_class

Source = str | Path | pd.DataFrame


def pretrain(
    objective: str,
    *,
    features: str | Path,
    manifest: Source,
    out: str | Path,
    registration: Source | None = None,
    adapter: str | Path | None = None,
    labels: Source | None = None,
    config: FitConfig | Mapping[str, Any] | None = None,
    skip_missing: bool = False,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Train the registered `objective` and write its run dir at `out`; returns `out`.

    `features`: feature-file folder (local or s3://); `manifest`, `registration`, `labels`: a
    path/URI or a table; `adapter`: a stage-1 run dir; `config`: the objective's config, or a
    mapping of overrides over its defaults (`cscl.train.objective_config`); `info`: extra facts
    for the run config's "data" block (e.g. a pipeline artifact URI).
    """
    # imported here: cscl.registration pulls in the slide readers (~3 s), and serving imports
    # cscl.train (load_trained) without ever training
    from cscl.registration import load_registrations

    cls = objective_class(objective)
    cohort = load_cohort(features, manifest, on_missing_file="skip" if skip_missing else "error")
    regs = _table(registration, load_registrations)
    labs = load_labels(labels) if cls.needs_labels and labels is not None else None
    inputs = TrainInputs(cohort, regs, labs, adapter_dir=adapter)
    obj = create_objective(objective, inputs, config)
    result = fit(obj)
    sources = {"features_dir": features, "manifest": manifest, "registration": registration,
               "labels": labels if cls.needs_labels else None}  # fmt: skip
    extra = {**obj.data_info(), **dict(info or {})}
    if labs is not None and label_notes(labs):
        extra["label_notes"] = label_notes(labs)
    data = data_block(cohort, sources, extra)
    return write_run(out, obj, result, data)


def _table(src: Source | None, load) -> pd.DataFrame | None:
    if src is None or isinstance(src, pd.DataFrame):
        return src
    return load(str(src))


def data_block(
    cohort: CohortFeatures, sources: Mapping[str, Any], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The run config's "data" block: what was trained on (tables given in memory are left out)."""
    named = {k: str(v) for k, v in sources.items() if isinstance(v, str | Path)}
    return {
        "fingerprint": cohort.fingerprint,
        "extractor_hash": cohort.extractor_hash,
        "encoder": cohort.encoder,
        "n_cases": len(cohort.cases),
        **named,
        **extra,
    }


def write_run(out: str | Path, objective: Objective, result: FitResult, data: dict) -> Path:
    """config.json + state dicts of a fitted objective (cscl.train.checkpoint.save_run)."""
    config = {
        **objective.run_config(),
        "train": asdict(objective.config),
        "seed": objective.config.seed,
        "data": data,
        "env": environment(),
        **result.as_config(),
    }
    return save_run(out, config, objective.saved_modules())
