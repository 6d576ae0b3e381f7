"""Served IHC triage: packaging fits the calibration map and the operating point of each
IHC-status head; a served prediction carries the calibrated probability and the decision."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import serving_fixtures as fx

from cscl.embeddings import read_embeddings, write_embeddings
from cscl.eval.calibration import PlattMap
from cscl.eval.triage import sensitivity_threshold
from cscl.eval.triage_head import DEFAULT_TRIAGE_SENSITIVITY, SKIP, STAIN, triage_decisions
from cscl.features import read_features
from cscl.packaging import BundleSpec, build_bundle

N = 90
DIM = 16  # the tiny model's embedding size


@pytest.fixture(scope="module")
def planted(made, tmp_path_factory) -> dict:
    """Embeddings of the tiny run's model version where one direction carries ER status."""
    root = tmp_path_factory.mktemp("triage_inputs")
    meta, _ = read_embeddings(made["embeddings"])
    rng = np.random.default_rng(0)
    ids = list(meta["case_id"]) + [f"extra{i:03d}" for i in range(N - len(meta))]
    er = rng.permutation(np.arange(N) < 36)  # 36 positive, 54 negative
    direction = np.zeros(DIM)
    direction[:4] = 0.5
    X = rng.normal(size=(N, DIM)) + 2.0 * np.outer(er, direction)
    m = pd.DataFrame({"case_id": ids, "slide_id": [f"{c}_HE" for c in ids], "stain": "HE",
                      "model_version": meta["model_version"].iloc[0]})  # fmt: skip
    emb = write_embeddings(root / "embeddings.parquet", m, X.astype(np.float32))
    labels = pd.DataFrame(
        {
            "case_id": ids,
            "er_status": np.where(er, "positive", "negative"),
            "ki67_status": ["high"] * 6 + ["low"] * (N - 6),  # too few positives for a triage
            "subtype": ["LumA", "LumB", "TNBC"] * (N // 3),
        }
    )
    labels.to_csv(root / "labels.csv", index=False)
    return {"embeddings": emb, "labels": root / "labels.csv", "direction": direction}


@pytest.fixture(scope="module")
def bundle(made, planted, tmp_path_factory):
    spec = BundleSpec(labels=str(planted["labels"]), embeddings=planted["embeddings"],
                      tasks="er_status,ki67_status,subtype", n_iter=2)  # fmt: skip
    return build_bundle(made["run"], tmp_path_factory.mktemp("triage_bundle") / "b", spec)


def test_package_stores_the_operating_point_of_ihc_status_heads(bundle):
    heads = json.loads((bundle.path / "heads.json").read_text())
    tri = heads["er_status"]["triage"]
    assert tri["positive_class"] == "positive" and tri["marker"] == "ER"
    assert tri["target_sensitivity"] == DEFAULT_TRIAGE_SENSITIVITY
    assert tri["calibration"]["method"] == "platt"
    ref = tri["reference"]
    assert ref["n_positive"] == 36 and ref["n_negative"] == 54
    assert ref["sensitivity"] >= 0.95 and ref["missed_positives"] <= 36 - np.ceil(0.95 * 36)
    assert 0.0 < ref["skip_fraction"] < 1.0
    assert "triage" not in heads["ki67_status"]  # 6 positives: too few, no triage served
    assert "triage" not in heads["subtype"]  # not an IHC-status task
    meta = json.loads((bundle.path / "bundle.json").read_text())
    assert meta["tasks"]["er_status"]["triage"] == {
        "positive_class": "positive", "target_sensitivity": 0.95, "threshold": tri["threshold"]
    }  # fmt: skip


def test_threshold_keeps_the_target_share_of_positives_out_of_fold(bundle, planted):
    from cscl.eval.kfold import kfold_eval

    labels = pd.read_csv(planted["labels"])
    meta, X = read_embeddings(planted["embeddings"])
    y = labels.set_index("case_id").loc[meta["case_id"], "er_status"].to_numpy(str)
    tri = json.loads((bundle.path / "heads.json").read_text())["er_status"]["triage"]
    r = kfold_eval(X.astype(np.float64), y, folds=5, seed=0, n_iter=2, n_boot=0)
    p = PlattMap.from_dict(tri["calibration"])(r.predictions["prob_positive"].to_numpy())
    pos = r.predictions["y_true"].to_numpy(str) == "positive"
    assert tri["threshold"] == pytest.approx(sensitivity_threshold(p, pos, 0.95))


def test_served_prediction_carries_the_triage(bundle, made):
    from cscl.inference import Predictor

    pred = Predictor(bundle.path, warmup=False)
    sf = read_features(next(iter(sorted(made["features"].glob("*.h5")))))
    out = pred.predict_features(sf)
    assert set(out["triage"]) == {"er_status"}
    t = out["triage"]["er_status"]
    assert set(t) == {"probability_positive", "positive_class", "threshold",
                      "target_sensitivity", "decision", "note"}  # fmt: skip
    tri = pred.heads["er_status"]["triage"]
    raw = out["predictions"]["er_status"]["positive"]
    assert t["probability_positive"] == pytest.approx(
        float(PlattMap.from_dict(tri["calibration"])(np.array([raw]))[0])
    )
    assert t["decision"] == (STAIN if t["probability_positive"] >= t["threshold"] else SKIP)
    assert t["target_sensitivity"] == 0.95 and t["threshold"] == tri["threshold"]
    assert "pre-screen" in t["note"] or "stain as usual" in t["note"]


def test_decision_follows_the_calibrated_probability(bundle, planted):
    heads = bundle.heads
    d = planted["direction"]
    pos = triage_decisions(heads, 4.0 * d)["er_status"]
    neg = triage_decisions(heads, -4.0 * d)["er_status"]
    assert pos["decision"] == STAIN and pos["probability_positive"] > 0.9
    assert neg["decision"] == SKIP and neg["probability_positive"] < pos["threshold"]
    assert "ER stain could be skipped" in neg["note"]


def test_bundle_without_triage_serves_as_before(packaged, tmp_path):
    """8 + 8 ER cases are too few for a triage: no `triage` key, predictions unchanged."""
    from cscl.inference import Predictor

    pred = Predictor(packaged["bundle"], warmup=False)
    assert all("triage" not in h for h in pred.heads.values())
    out = pred.predict_features(read_features(fx.feature_file(
        tmp_path / "x.h5", "x_HE", np.random.default_rng(1))))  # fmt: skip
    assert "triage" not in out and "er_status" in out["predictions"]


def test_cli_default_is_the_library_default():
    from cscl_platform.commands import package

    p = argparse.ArgumentParser()
    package.add_arguments(p)
    args = p.parse_args(["--model", "m", "--out", "o"])
    assert args.triage_sensitivity == DEFAULT_TRIAGE_SENSITIVITY
