"""Slide embeddings of a cohort's H&E slides from a trained model or a baseline.

`embed_cohort(model, features_dir, manifest_uri, out_path)` → Parquet (cscl.embeddings), one row
per H&E slide with the model's `model_version`. `model` is a run dir from `cscl pretrain` or the
baseline name "mean-pool". Feature files must come from the extractor the model was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cscl.data import load_cohort
from cscl.embeddings import write_embeddings
from cscl.errors import InputError
from cscl.progress import progress
from cscl.train.checkpoint import TrainedModel, load_trained


def embed_cohort(
    model_dir_or_baseline: str | Path | TrainedModel,
    features_dir: str | Path,
    manifest_uri: str | pd.DataFrame,
    out_path: str | Path,
    *,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """Embed every H&E slide of the manifest; returns the Parquet path."""
    model = (
        model_dir_or_baseline
        if isinstance(model_dir_or_baseline, TrainedModel)
        else load_trained(model_dir_or_baseline, device=device)
    )
    cohort = load_cohort(features_dir, manifest_uri, he_only=True)
    want = model.config.get("data", {}).get("extractor_hash")
    if want and want != cohort.extractor_hash:
        raise InputError(
            f"features under {features_dir} come from extractor {cohort.extractor_hash} but the "
            f"model was trained on {want}",
            hint="extract features with the model's backbone/config",
        )
    rows, X = [], []
    with progress(quiet) as prog:
        task = prog.add_task("embed H&E slides", total=len(cohort.cases))
        for case in cohort.cases:
            emb, _ = model.embed(case.he.features.astype(np.float32), case.he.coords)
            rows.append(
                {
                    "case_id": case.case_id,
                    "slide_id": case.he.slide_id,
                    "stain": case.he.stain,
                    "model_version": model.model_version,
                }
            )
            X.append(emb)
            prog.update(task, advance=1)
    return write_embeddings(out_path, pd.DataFrame(rows), np.stack(X).astype(np.float32))
