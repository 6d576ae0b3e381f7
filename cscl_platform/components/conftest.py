"""Fixtures for component tests: the inputs a component needs, each built by LIBRARY functions on
a tiny local cohort (no S3: cscl.io.storage treats a plain path like an object store).

Why not one chain of component calls: a component test must fail for its own reasons. Each
fixture below is a session-cached data builder that calls the library (never a component), so a
broken component fails only its own tests; a broken library step fails only the fixtures (and
tests) that need its output. Pipeline-level wiring is tested in tests/pipelines only.

Data fixtures (session, plain paths/values): `cohort`, `slide_index_csv`, `feature_store`,
`local_features`, `registration_dir`, `adapter_dir`, `model_dir`, `embeddings_parquet`,
`baseline_parquet`, `eval_results_dir`. Artifact fixtures (per test, fresh metadata): `index_art`,
`features_art`, `registration_art`, `adapter_art`, `model_art`, `embeddings_art`,
`baseline_art`, `eval_results_art`. `art(cls, path, **meta)` makes any other artifact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from kfp import dsl

from cscl.embed import embed_cohort
from cscl.ingest import ingest_cohort, read_index, write_index
from cscl.shards import extract_to_store, training_inputs
from cscl.train import SMALL_ABMIL, clamp_schedule, objective_config, pretrain
from cscl.wsi.extract import ExtractConfig

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

TINY_EXTRACT = dict(
    backbone="test_resnet", allow_random=True, target_mpp=2.0, patch_size=64, min_tissue=0.25
)
N_CASES = 4  # × (HE, HER2): the smallest cohort with 2 cases per class for 2-fold evaluation


def art(cls, path: Path, **meta):
    """A KFP artifact whose path is `path` (what the local runner hands a component)."""
    a = cls(uri=str(path))
    a.metadata.update(meta)
    return a


@dataclass(frozen=True)
class Cohort:
    folder: Path
    manifest: str
    labels: str
    transforms: str
    tasks: str  # label tasks this tiny cohort can evaluate with 2 folds


@dataclass(frozen=True)
class FeatureStore:
    prefix: str  # project prefix: features under <prefix>/features/<extractor_hash>/
    extractor_hash: str
    index_csv: Path  # the feature index collect_features writes (slide → features_uri, status)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Cohort:
    from cscl.synthetic.testing import tiny_cohort
    from cscl_platform.demo import pick_tasks

    folder = tmp_path_factory.mktemp("cohort")
    manifest = tiny_cohort(folder, n_cases=N_CASES, stains=("HE", "HER2"), width=1600, height=1200)
    labels = folder / "labels.csv"
    return Cohort(
        folder, str(manifest), str(labels), str(folder / "transforms.csv"), pick_tasks(labels, 2)
    )


@pytest.fixture(scope="session")
def slide_index_csv(cohort, tmp_path_factory) -> Path:
    """The slide index (cscl.ingest) of the cohort."""
    res = ingest_cohort(cohort.manifest, progress=False)
    return write_index(res.index, tmp_path_factory.mktemp("index") / "slide_index.csv")


@pytest.fixture(scope="session")
def feature_store(slide_index_csv, tmp_path_factory) -> FeatureStore:
    """Every slide extracted into a local 'store' (cscl.shards.extract_to_store, one shard)."""
    root = tmp_path_factory.mktemp("store")
    prefix = str(root / "project")
    ehash, rep = extract_to_store(
        read_index(slide_index_csv), ExtractConfig(**TINY_EXTRACT), prefix, root / "scratch"
    )
    assert not rep.failed, rep.table
    rep.table.to_csv(root / "features.csv", index=False)
    return FeatureStore(prefix, ehash, root / "features.csv")


@pytest.fixture(scope="session")
def local_features(slide_index_csv, feature_store, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """(local features dir, manifest of slides with features) for the training-side builders."""
    return training_inputs(
        read_index(slide_index_csv),
        pd.read_csv(feature_store.index_csv, dtype={"slide_id": str, "case_id": str}),
        tmp_path_factory.mktemp("features"),
    )


@pytest.fixture(scope="session")
def registration_dir(slide_index_csv, cohort, tmp_path_factory) -> Path:
    """registration.csv (+ overlays/) of the cohort (cscl.registration.batch)."""
    from cscl.registration.batch import register_manifest

    out = tmp_path_factory.mktemp("registration")
    register_manifest(str(slide_index_csv), out, cohort.transforms, progress=False)
    return out


@pytest.fixture(scope="session")
def adapter_dir(local_features, registration_dir, feature_store, tmp_path_factory) -> Path:
    """A 1-epoch stage-1 adapter run dir (`cscl.train.pretrain("adapter")`)."""
    feats, manifest = local_features
    cfg = clamp_schedule(objective_config("adapter", epochs=1, batch_size=4, pairs_per_case=32,
                                          quiet=True))  # fmt: skip
    return pretrain("adapter", features=feats, manifest=manifest, config=cfg,
                    out=tmp_path_factory.mktemp("adapter") / "run",
                    registration=registration_dir / "registration.csv",
                    info={"extractor_hash": feature_store.extractor_hash})  # fmt: skip


@pytest.fixture(scope="session")
def model_dir(local_features, registration_dir, adapter_dir, tmp_path_factory) -> Path:
    """A 1-epoch small CSCL slide-encoder run dir on the adapter (`cscl.train.pretrain("cscl")`)."""
    feats, manifest = local_features
    cfg = clamp_schedule(objective_config("cscl", epochs=1, batch_size=4, n_tokens=64,
                                          abmil=dict(SMALL_ABMIL), quiet=True))  # fmt: skip
    return pretrain("cscl", features=feats, manifest=manifest, config=cfg, adapter=adapter_dir,
                    out=tmp_path_factory.mktemp("model") / "run",
                    registration=registration_dir / "registration.csv")  # fmt: skip


@pytest.fixture(scope="session")
def embeddings_parquet(model_dir, local_features, tmp_path_factory) -> Path:
    feats, manifest = local_features
    out = tmp_path_factory.mktemp("embeddings") / "embeddings.parquet"
    return embed_cohort(model_dir, feats, manifest, out, quiet=True).path


@pytest.fixture(scope="session")
def baseline_parquet(local_features, tmp_path_factory) -> Path:
    feats, manifest = local_features
    out = tmp_path_factory.mktemp("baseline") / "embeddings.parquet"
    return embed_cohort("mean-pool", feats, manifest, out, quiet=True).path


@pytest.fixture(scope="session")
def eval_results_dir(embeddings_parquet, baseline_parquet, cohort, tmp_path_factory) -> Path:
    """cscl.eval results dir (metrics.json, report.html …) of the model vs mean-pool."""
    from cscl.eval.run import evaluate

    out = tmp_path_factory.mktemp("eval")
    evaluate({"cscl": embeddings_parquet, "mean-pool": baseline_parquet}, cohort.labels,
             cohort.tasks, out, "fewshot,kfold", folds=2, n_boot=50, ks=[1])  # fmt: skip
    return out


# --- artifacts over the data above (fresh per test: components write their metadata) --------


@pytest.fixture
def index_art(slide_index_csv):
    return art(dsl.Dataset, slide_index_csv)


@pytest.fixture
def features_art(feature_store):
    return art(dsl.Dataset, feature_store.index_csv, extractor_hash=feature_store.extractor_hash)


@pytest.fixture
def registration_art(registration_dir):
    return art(dsl.Dataset, registration_dir)


@pytest.fixture
def adapter_art(adapter_dir):
    return art(dsl.Model, adapter_dir, stage="adapter")


@pytest.fixture
def model_art(model_dir):
    return art(dsl.Model, model_dir, stage="slide", objective="cscl")


@pytest.fixture
def embeddings_art(embeddings_parquet):
    return art(dsl.Dataset, embeddings_parquet)


@pytest.fixture
def baseline_art(baseline_parquet):
    return art(dsl.Dataset, baseline_parquet)


@pytest.fixture
def eval_results_art(eval_results_dir):
    return art(dsl.Dataset, eval_results_dir)
