"""Model bundle + server-agnostic Predictor: packaging, loading, validation, slide path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import serving_fixtures as fx

from cscl.bundle import load_bundle
from cscl.errors import InputError
from cscl.features import read_features


@pytest.fixture(scope="module")
def predictor(packaged):
    from cscl.inference import Predictor

    return Predictor(packaged["bundle"])


def test_package_writes_self_describing_bundle_and_mar(packaged, made):
    meta = packaged["meta"]
    files = {p.name for p in packaged["bundle"].iterdir()}
    assert {"bundle.json", "config.json", "slide_encoder.pt", "heads.json",
            "reference.parquet"} <= files  # fmt: skip
    assert meta["version"] == "0.1.0+test" and meta["name"] == "cscl"
    assert meta["preprocessing"]["extractor_hash"] == fx.ehash()
    assert meta["preprocessing"]["target_mpp"] == 1.0 and meta["preprocessing"]["patch_size"] == 64
    assert meta["backbone"] == {"name": "test_resnet", "weights": None, "random_init": True,
                                "seed": 0}  # fmt: skip
    assert meta["tasks"]["er_status"]["classes"] == ["negative", "positive"]
    assert meta["tasks"]["os"]["type"] == "survival"
    assert meta["training_fingerprint"] == "test-fingerprint"
    assert set(meta["files"]) == files - {"bundle.json"}
    import zipfile

    with zipfile.ZipFile(packaged["mar"]) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
    assert {"handler.py", "bundle.json", "slide_encoder.pt", "heads.json"} <= names
    assert manifest["model"]["handler"] == "handler:handle"
    assert "model-config.yaml" in names


def test_reference_set_is_readable_by_monitoring(packaged):
    from cscl.monitoring.reference import load_reference

    ref = load_reference(str(packaged["bundle"]), model_version="0.1.0+test")
    assert len(ref) == fx.N_CASES and ref.embeddings.shape[1] == 16
    assert "pred__er_status__positive" in ref.pred_columns


def test_load_bundle_detects_tampering(packaged, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(packaged["bundle"], copy)
    load_bundle(copy)  # intact copy loads
    (copy / "heads.json").write_text((copy / "heads.json").read_text().replace("1", "2", 1))
    with pytest.raises(InputError, match="sha256"):
        load_bundle(copy)
    (copy / "heads.json").unlink()
    with pytest.raises(InputError, match="lacks heads.json"):
        load_bundle(copy)
    with pytest.raises(InputError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_predict_features_answer_matches_contract(predictor, made):
    sf = read_features(made["features"] / "case003_HE.h5")
    out = predictor.predict_features(sf)
    assert out["model_version"] == "0.1.0+test"
    assert len(out["embedding"]) == 16 and all(np.isfinite(out["embedding"]))
    er = out["predictions"]["er_status"]
    assert set(er) == {"negative", "positive"} and er["positive"] + er["negative"] == pytest.approx(
        1
    )
    assert sum(out["predictions"]["subtype"].values()) == pytest.approx(1)
    assert isinstance(out["predictions"]["os"]["risk_score"], float)
    top = out["top_patches"]
    assert len(top) == 8 and [t["attention"] for t in top] == sorted(
        (t["attention"] for t in top), reverse=True
    )
    assert {tuple(c) for c in sf.coords.tolist()} >= {(t["x"], t["y"]) for t in top}
    assert out["qc"]["vendor"] == "aperio" and len(out["qc"]["od_mean"]) == 3
    # the same input gives the same answer; batching gives the same answer as one at a time
    again = predictor.predict_many([sf, read_features(made["features"] / "case004_HE.h5")])[0]
    assert again["embedding"] == out["embedding"] and again["predictions"] == out["predictions"]


def _sf(made, **kw):
    rng = np.random.default_rng(1)
    path = made["features"].parent / "odd" / "x.h5"
    return read_features(fx.feature_file(path, "odd", rng, **kw))


def test_invalid_features_are_refused_with_clear_errors(predictor, made):
    with pytest.raises(InputError, match="feature dimension 32 but model .* expects 96"):
        predictor.predict_features(_sf(made, dim=32))
    with pytest.raises(InputError, match="no patches"):
        predictor.predict_features(_sf(made, n=0))
    with pytest.raises(InputError, match="extractor 'abc' .* needs extractor"):
        predictor.predict_features(_sf(made, hash_="abc"))
    bad = _sf(made)
    bad.features[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predictor.predict_features(bad)


def test_predict_slide_runs_the_training_extraction(predictor, slide):
    from cscl.wsi.extract import features_in_memory
    from cscl.wsi.readers import open_slide

    out = predictor.predict_slide(str(slide))
    assert out["slide_id"] == slide.stem and out["n_patches"] > 0
    assert out["qc"]["mpp"] == 0.5 and out["qc"]["tissue_area_mm2"] > 0
    # identical to predicting the features `cscl extract` would write for this slide
    with open_slide(slide) as wsi:
        sf = features_in_memory(wsi, fx.extract_config(), predictor.encoder)
    assert sf.extractor_hash == fx.ehash()
    ref = predictor.predict_features(sf)
    assert np.allclose(ref["embedding"], out["embedding"], atol=1e-5)


def test_package_refuses_settings_that_do_not_reproduce_the_features(made, tmp_path):
    from cscl.packaging import feature_preprocessing

    with pytest.raises(InputError, match="min_tissue 0.5"):
        feature_preprocessing(made["features"], fx.ehash(), min_tissue=0.5)
    with pytest.raises(InputError, match="no feature file of extractor"):
        feature_preprocessing(made["features"], "0000")
    _, pre = feature_preprocessing(made["features"], fx.ehash(), features_only=True)
    assert pre["slide_input"] is False


def test_features_only_bundle_refuses_slides(made, tmp_path, slide):
    from cscl.inference import Predictor

    pk = fx.package(tmp_path, made, extra=("--features-only", "--no-mar"))
    assert not (pk["store"] / "cscl.mar").exists()
    p = Predictor(pk["bundle"])
    assert p.predict_features(read_features(made["features"] / "case000_HE.h5"))["embedding"]
    with pytest.raises(InputError, match="feature files only"):
        p.predict_slide(str(slide))


def test_cli_predict_in_process(packaged, made, capsys):
    from cscl.cli import main

    f = made["features"] / "case001_HE.h5"
    assert main(["predict", "--bundle", str(packaged["bundle"]), "--features", str(f),
                 "--compact"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["slide_id"] == "case001_HE" and "er_status" in out["predictions"]
    bad = made["features"].parent / "not_h5.h5"
    bad.write_text("hello")
    assert main(["predict", "--bundle", str(packaged["bundle"]), "--features", str(bad)]) == 2
    assert "cannot read feature file" in capsys.readouterr().err
