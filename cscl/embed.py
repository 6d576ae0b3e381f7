"""Slide embeddings of a cohort's H&E slides from a trained model or a baseline.

`embed_cohort(model, features_dir, manifest_uri, out_path)` → Parquet (cscl.embeddings), one row
per H&E slide with the model's `model_version`. `model` is a run dir from `cscl pretrain` or the
baseline name "mean-pool". Feature files must come from the extractor the model was trained on.

A batch goes on past a bad slide (missing or truncated feature file, no patches, an embedding
that is not finite): the others are embedded and written, and the failures are returned so the
CLI can list them and exit 1. Only a run where no slide can be embedded raises.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cscl.data import load_cohort
from cscl.embeddings import read_embeddings, write_embeddings
from cscl.errors import CsclError, InputError
from cscl.ingest import read_index
from cscl.progress import progress
from cscl.shards import stored_features
from cscl.train.checkpoint import TrainedModel, load_trained


@dataclass
class EmbedSummary:
    """What `embed_cohort` wrote, and each slide (or case) it could not embed, with why."""

    path: Path
    n_embedded: int
    failed: list[str] = field(default_factory=list)  # "<slide or case> (<reason>)"

    @property
    def ok(self) -> bool:
        return not self.failed


def embed_cohort(
    model_dir_or_baseline: str | Path | TrainedModel,
    features_dir: str | Path,
    manifest_uri: str | pd.DataFrame,
    out_path: str | Path,
    *,
    device: str | None = None,
    quiet: bool = False,
) -> EmbedSummary:
    """Embed every H&E slide of the manifest that can be; see the module doc for failures."""
    model = (
        model_dir_or_baseline
        if isinstance(model_dir_or_baseline, TrainedModel)
        else load_trained(model_dir_or_baseline, device=device)
    )
    with warnings.catch_warnings():  # the skipped slides are returned and listed by the caller
        warnings.simplefilter("ignore", UserWarning)
        cohort = load_cohort(features_dir, manifest_uri, he_only=True, on_missing_file="skip")
    want = model.config.get("data", {}).get("extractor_hash")
    if want and want != cohort.extractor_hash:
        raise InputError(
            f"features under {features_dir} come from extractor {cohort.extractor_hash} but the "
            f"model was trained on {want}",
            hint="extract features with the model's backbone/config",
        )
    failed = list(cohort.skipped)
    rows, X = [], []
    with progress(quiet) as prog:
        task = prog.add_task("embed H&E slides", total=len(cohort.cases))
        for case in cohort.cases:
            prog.update(task, advance=1)
            try:
                emb, _ = model.embed(case.he.features.astype(np.float32), case.he.coords)
            except CsclError as err:
                failed.append(f"{case.he.slide_id} ({err})")
                continue
            except (ValueError, RuntimeError) as err:  # one slide's numeric failure
                failed.append(f"{case.he.slide_id} ({type(err).__name__}: {err})")
                continue
            emb = np.asarray(emb, dtype=np.float32)
            if not np.isfinite(emb).all():
                failed.append(f"{case.he.slide_id} (the embedding has NaN/inf values)")
                continue
            rows.append(
                {
                    "case_id": case.case_id,
                    "slide_id": case.he.slide_id,
                    "stain": case.he.stain,
                    "model_version": model.model_version,
                }
            )
            X.append(emb)
    if not rows:
        raise InputError(
            f"no H&E slide of {manifest_uri!s:.200} could be embedded",
            hint=f"failures: {failed[:5]}",
        )
    path = write_embeddings(out_path, pd.DataFrame(rows), np.stack(X))
    return EmbedSummary(path, len(rows), failed)


def embed_stored(
    model_dir_or_baseline: str | Path,
    slide_index_csv: str | Path,
    feature_index_csv: str | Path,
    out_path: str | Path,
) -> tuple[EmbedSummary, dict]:
    """`cscl.embed.embed_cohort` on the pipeline's stored features (what the embed components
    run): the summary, and the metadata a component shows (rows, dimension, failed slides —
    reported, never silently dropped)."""
    feats, manifest = stored_features(
        read_index(slide_index_csv), pd.read_csv(feature_index_csv, dtype={"slide_id": str})
    )
    summary = embed_cohort(model_dir_or_baseline, feats, manifest, out_path)
    meta, X = read_embeddings(out_path)
    info = {"n_slides": len(meta), "dim": int(X.shape[1]), "failed": summary.failed}
    print(f"{len(meta)} H&E slide embeddings of dimension {X.shape[1]}")
    for why in summary.failed:
        print(f"FAILED {why}")
    return summary, info
