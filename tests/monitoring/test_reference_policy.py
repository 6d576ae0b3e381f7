"""Reference set (writer/reader contract) and the YAML policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cscl.errors import InputError
from cscl.io import storage
from cscl.monitoring.policy import DEFAULT_POLICY, load_policy
from cscl.monitoring.reference import load_reference, write_reference
from cscl.monitoring.schema import QC_NUMERIC

REPO = Path(__file__).resolve().parents[2]


def test_reference_roundtrip(tmp_path, record_model):
    c = record_model.sample(12, seed=5)
    uri = write_reference(
        tmp_path / "bundle",
        c["embeddings"],
        c["predictions"],
        c["qc"],
        "v7",
        slide_ids=[f"s{i}" for i in range(12)],
        labels=c["labels"],
    )
    assert uri.endswith("bundle/reference.parquet")
    ref = load_reference(str(tmp_path / "bundle"), model_version="v7")
    assert ref.model_version == "v7" and len(ref) == 12 and ref.slide_ids[3] == "s3"
    np.testing.assert_allclose(ref.embeddings, c["embeddings"], rtol=1e-6)
    assert list(ref.qc.columns) == [*QC_NUMERIC, "qc_vendor"]
    assert ref.qc["qc_od_mean_2"].iloc[4] == pytest.approx(c["qc"][4]["od_mean"][2], rel=1e-6)
    # binary task keeps one column (the other is 1 - p); survival keeps risk_score
    assert ref.pred_columns == [
        "pred__er_status__positive",
        "pred__os__risk_score",
        "pred__subtype__HER2+",
        "pred__subtype__LumA",
        "pred__subtype__LumB",
        "pred__subtype__TNBC",
    ]
    assert ref.labels["label__er_status"].tolist() == c["labels"]["er_status"]


def test_reference_in_bundle_subfolder_and_s3(tmp_path, record_model, s3_store):
    c = record_model.sample(5, seed=6)
    write_reference(
        tmp_path / "m" / "v2" / "bundle", c["embeddings"], c["predictions"], c["qc"], "v2"
    )
    assert load_reference(str(tmp_path / "m" / "v2")).model_version == "v2"
    storage.s3_client().create_bucket(Bucket="refs")
    write_reference(
        "s3://refs/models/cscl/v2/bundle",
        c["embeddings"],
        c["predictions"],
        c["qc"],
        "v2",
    )
    ref = load_reference("s3://refs/models/cscl/v2/")
    assert len(ref) == 5 and ref.uri == "s3://refs/models/cscl/v2/bundle/reference.parquet"


def test_missing_or_wrong_reference_is_a_clear_error(tmp_path, record_model):
    with pytest.raises(InputError, match="no reference set found") as e:
        load_reference(str(tmp_path / "models" / "v9"))
    assert "cscl package" in str(e.value)
    c = record_model.sample(5, seed=6)
    write_reference(tmp_path / "b", c["embeddings"], c["predictions"], c["qc"], "v1")
    with pytest.raises(InputError, match="belongs to model version 'v1', not 'v2'"):
        load_reference(str(tmp_path / "b"), model_version="v2")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read reference set"):
        load_reference(str(tmp_path / "junk.parquet"))


def test_write_reference_checks_its_input(tmp_path, record_model):
    c = record_model.sample(4, seed=7)
    with pytest.raises(InputError, match="4 embeddings but 3 predictions"):
        write_reference(tmp_path, c["embeddings"], c["predictions"][:3], c["qc"], "v1")
    bad_qc = [dict(q) for q in c["qc"]]
    del bad_qc[2]["od_mean"]
    with pytest.raises(InputError, match="qc has no od_mean"):
        write_reference(tmp_path, c["embeddings"], c["predictions"], bad_qc, "v1")


def test_policy_file_is_the_default_and_overrides_merge(tmp_path):
    assert yaml.safe_load((REPO / "policies" / "drift.yaml").read_text()) == DEFAULT_POLICY
    p = tmp_path / "p.yaml"
    p.write_text("min_samples: 50\nsignals:\n  qc: {threshold: 0.001}\n")
    pol = load_policy(str(p))
    assert pol.min_samples == 50
    assert pol.signal("qc")["threshold"] == 0.001
    assert pol.signal("qc")["min_drifted_columns"] == 2  # untouched default
    assert load_policy(None).raw == DEFAULT_POLICY


@pytest.mark.parametrize(
    "text, msg",
    [
        ("signals: {colour: {}}", "unknown signals"),
        ("min_samples: 1", "min_samples must be an integer >= 2"),
        ("signals: {qc: {num_method: magic}}", "num_method must be one of"),
        ("signals: {embedding: {method: mmd}}", "only 'model'"),
        ("retrain_on: [nope]", "retrain_on names unknown signals"),
        ("- just a list", "must be a mapping"),
        ("min_samples: [", "not valid YAML"),
    ],
)
def test_bad_policy_is_a_clear_error(tmp_path, text, msg):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=msg):
        load_policy(str(p))
