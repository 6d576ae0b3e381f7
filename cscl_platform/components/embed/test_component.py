"""embed / embed_baseline / embed_released: H&E embeddings tables (cscl.embed.embed_cohort on
the store's feature folder, as `cscl embed` does)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from kfp import dsl

from cscl.embeddings import read_embeddings
from cscl.errors import InputError
from cscl_platform.components.conftest import art
from cscl_platform.components.embed.component import embed, embed_baseline, embed_released


def test_interface():
    assert embed.component_spec.outputs["embeddings"].type == "system.Dataset@0.0.1"
    assert embed.component_spec.inputs["model"].type == "system.Model@0.0.1"
    assert "model_uri" in embed_released.component_spec.inputs


def test_embeddings_match_the_library(index_art, features_art, model_art, embeddings_parquet,
                                      tmp_path):  # fmt: skip
    out = art(dsl.Dataset, tmp_path / "emb")
    n = embed.python_func(
        slide_index=index_art, features=features_art, model=model_art, embeddings=out
    )
    meta, X = read_embeddings(out.path)
    assert n == len(meta) == 4 and (meta["stain"] == "HE").all()
    assert out.metadata == {"n_slides": 4, "dim": X.shape[1], "failed": []}
    _, X0 = read_embeddings(embeddings_parquet)  # cscl.embed.embed_cohort on local copies
    np.testing.assert_allclose(X, X0, atol=1e-5)


def test_baseline(index_art, features_art, tmp_path):
    out = art(dsl.Dataset, tmp_path / "emb")
    assert embed_baseline.python_func(slide_index=index_art, features=features_art,
                                      embeddings=out) == 4  # fmt: skip
    meta, _ = read_embeddings(out.path)
    assert len(meta) == 4 and (meta["stain"] == "HE").all()
    assert out.metadata["baseline"] == "mean-pool"


def test_failed_slides_are_left_out(index_art, feature_store, tmp_path):
    feats = pd.read_csv(feature_store.index_csv, dtype={"slide_id": str})
    he = feats.index[feats["stain"] == "HE"][0]
    feats.loc[he, "status"] = "failed"
    feats.to_csv(tmp_path / "f.csv", index=False)
    out = art(dsl.Dataset, tmp_path / "emb")
    n = embed_baseline.python_func(slide_index=index_art, features=art(dsl.Dataset,
                                   tmp_path / "f.csv"), embeddings=out)  # fmt: skip
    assert n == 3
    feats["status"] = "failed"
    feats.to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(InputError, match="no slide has features"):
        embed_baseline.python_func(slide_index=index_art, features=art(dsl.Dataset,
                                   tmp_path / "f.csv"), embeddings=out)  # fmt: skip


def test_embed_released_reads_a_bundle_from_the_store(
    index_art, features_art, model_dir, embeddings_parquet, tmp_path
):
    """A released model = `<uri>/bundle/`; here a run dir laid out that way (load_trained
    reads both)."""
    release = tmp_path / "models" / "cscl" / "v1"
    shutil.copytree(model_dir, release / "bundle")
    (release / "bundle" / "bundle.json").write_text('{"version": "v1"}')
    out = art(dsl.Dataset, tmp_path / "emb")
    v = embed_released.python_func(
        slide_index=index_art, features=features_art, model_uri=str(release), embeddings=out
    )
    meta, X = read_embeddings(out.path)
    _, X0 = read_embeddings(embeddings_parquet)
    assert v == "v1" and len(meta) == 4 and abs(X - X0).max() < 1e-4  # same model, same numbers
    assert out.metadata["model_uri"] == str(release)
