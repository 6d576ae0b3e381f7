"""embed / embed_baseline / embed_released: H&E embeddings tables."""

from __future__ import annotations

import shutil

from kfp import dsl

from cscl.embeddings import read_embeddings
from cscl_platform.components.conftest import art
from cscl_platform.components.embed.component import embed, embed_released


def test_interface():
    assert embed.component_spec.outputs["embeddings"].type == "system.Dataset@0.0.1"
    assert embed.component_spec.inputs["model"].type == "system.Model@0.0.1"
    assert "model_uri" in embed_released.component_spec.inputs


def test_embeddings(chain):
    meta, X = read_embeddings(chain["embeddings"].path)
    assert chain["n_embedded"] == len(meta) == 4 and (meta["stain"] == "HE").all()
    bmeta, B = read_embeddings(chain["baseline"].path)
    assert sorted(bmeta["case_id"]) == sorted(meta["case_id"]) and len(B) == len(X)


def test_embed_released_reads_a_bundle_from_the_store(chain, tmp_path):
    """A released model = `<uri>/bundle/`; here a run dir laid out that way (load_trained
    reads both)."""
    release = tmp_path / "models" / "cscl" / "v1"
    shutil.copytree(chain["model"].path, release / "bundle")
    (release / "bundle" / "bundle.json").write_text('{"version": "v1"}')
    out = art(dsl.Dataset, tmp_path / "emb")
    v = embed_released.python_func(
        slide_index=chain["index"], features=chain["features"], model_uri=str(release),
        embeddings=out,
    )  # fmt: skip
    meta, X = read_embeddings(out.path)
    _, X0 = read_embeddings(chain["embeddings"].path)
    assert v == "v1" and len(meta) == 4 and abs(X - X0).max() < 1e-4  # same model, same numbers
