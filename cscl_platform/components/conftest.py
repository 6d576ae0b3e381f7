"""Fixtures for component tests: the components' Python functions called in-process on a tiny
local cohort (no S3 needed: cscl.io.storage treats a plain path like an object store), chained
the way pipelines/training.py wires them. Pipeline-level runs are in tests/pipelines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kfp import dsl

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

TINY_EXTRACT = dict(
    backbone="test_resnet", allow_random=True, target_mpp=2.0, patch_size=64, min_tissue=0.25
)


def art(cls, path: Path, **meta):
    """A KFP artifact whose path is `path` (what the local runner hands a component)."""
    a = cls(uri=str(path))
    a.metadata.update(meta)
    return a


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """Runs ingest → extract (2 shards) → collect → register → pretrain ×2 → embed (+baseline)
    → evaluate on a 4-case cohort; returns a dict of artifacts and return values."""
    from cscl.synthetic.testing import tiny_cohort
    from cscl_platform.components.embed.component import embed, embed_baseline
    from cscl_platform.components.evaluate.component import evaluate
    from cscl_platform.components.extract_features.component import (
        collect_features,
        extract_features,
    )
    from cscl_platform.components.ingest.component import ingest
    from cscl_platform.components.pretrain_adapter.component import pretrain_adapter
    from cscl_platform.components.pretrain_slide_encoder.component import pretrain_slide_encoder
    from cscl_platform.components.register.component import register
    from cscl_platform.demo import pick_tasks

    root = tmp_path_factory.mktemp("chain")
    manifest = tiny_cohort(
        root / "cohort", n_cases=4, stains=("HE", "HER2"), width=1600, height=1200
    )
    labels = str(Path(manifest).parent / "labels.csv")
    prefix = str(root / "store")
    c: dict = {"root": root, "manifest": str(manifest), "labels": labels, "prefix": prefix}
    c["index"] = art(dsl.Dataset, root / "a" / "slide_index")
    (root / "a").mkdir()
    c["shards"] = ingest.python_func(
        manifest_uri=str(manifest), slide_index=c["index"], num_shards=2
    )
    reports = []
    for s in c["shards"]:
        rep = art(dsl.Dataset, root / "a" / f"shard{s}")
        c["ehash"] = extract_features.python_func(
            slide_index=c["index"], shard=s, num_shards=2, project_prefix=prefix,
            shard_report=rep, **TINY_EXTRACT,
        )  # fmt: skip
        reports.append(rep)
    c["shard_reports"] = reports
    c["features"] = art(dsl.Dataset, root / "a" / "features")
    c["collect_metrics"] = art(dsl.Metrics, root / "a" / "collect_metrics")
    c["collected"] = collect_features.python_func(
        shard_reports=reports, features=c["features"], metrics=c["collect_metrics"]
    )
    c["registration"] = art(dsl.Dataset, root / "a" / "registration")
    c["reg_metrics"] = art(dsl.Metrics, root / "a" / "reg_metrics")
    c["pairs_ok"] = register.python_func(
        slide_index=c["index"], registration=c["registration"], metrics=c["reg_metrics"],
        transforms_uri=str(Path(manifest).parent / "transforms.csv"),
    )  # fmt: skip
    common = dict(slide_index=c["index"], features=c["features"], registration=c["registration"])
    c["adapter"] = art(dsl.Model, root / "a" / "adapter")
    pretrain_adapter.python_func(
        **common,
        adapter=c["adapter"],
        epochs=1,
        batch_size=4,
        pairs_per_case=32,
        training_curve=art(dsl.HTML, root / "a" / "adapter_curve.html"),
    )
    c["model"] = art(dsl.Model, root / "a" / "model")
    pretrain_slide_encoder.python_func(
        **common, adapter=c["adapter"], model=c["model"], epochs=1, batch_size=4, n_tokens=64,
        small=True, training_curve=art(dsl.HTML, root / "a" / "model_curve.html"),
    )  # fmt: skip
    c["embeddings"] = art(dsl.Dataset, root / "a" / "embeddings")
    c["n_embedded"] = embed.python_func(
        slide_index=c["index"], features=c["features"], model=c["model"], embeddings=c["embeddings"]
    )
    c["baseline"] = art(dsl.Dataset, root / "a" / "baseline")
    embed_baseline.python_func(
        slide_index=c["index"], features=c["features"], embeddings=c["baseline"]
    )
    c["tasks"] = pick_tasks(labels, folds=2)
    c["eval_metrics"] = art(dsl.Metrics, root / "a" / "eval_metrics")
    c["classification"] = art(dsl.ClassificationMetrics, root / "a" / "classification")
    c["eval_report"] = art(dsl.HTML, root / "a" / "eval_report.html")
    c["eval_results"] = art(dsl.Dataset, root / "a" / "eval_results")
    c["score"] = evaluate.python_func(
        embeddings=c["embeddings"], baseline_embeddings=c["baseline"], labels_uri=labels,
        metrics=c["eval_metrics"], classification=c["classification"], report=c["eval_report"],
        results=c["eval_results"], tasks=c["tasks"], protocols="fewshot,kfold", folds=2,
        n_boot=50, ks="1",
    )  # fmt: skip
    return c
