"""Evaluation inputs: label spellings never split a class; a bad embeddings row is named."""

from __future__ import annotations

import numpy as np
import pytest

from cscl.embeddings import write_embeddings
from cscl.errors import InputError
from cscl.eval.inputs import load_inputs


def test_label_spellings_do_not_split_a_class_and_the_mapping_is_noted(
    make_planted, meta_for, tmp_path
):
    labels, X, _ = make_planted()
    pos = labels.index[labels["er_status"] == "positive"]
    labels.loc[pos[::3], "er_status"] = "POSITIVE"
    labels.loc[pos[1::3], "er_status"] = "Positive "
    labels.loc[labels.index[labels["er_status"] == "negative"][::2], "er_status"] = "neg"
    labels.to_csv(tmp_path / "labels.csv", index=False)
    for source in (tmp_path / "labels.csv", labels):  # a file and an in-memory table alike
        inputs = load_inputs((meta_for(labels.case_id), X), source, "er_status,subtype,os")
        assert inputs.targets["er_status"].classes == ["negative", "positive"]
        note = next(n for n in inputs.notes if n.startswith("er_status: mapped"))
        assert "'POSITIVE': 'positive'" in note and "'Positive ': 'positive'" in note


def test_a_non_finite_embedding_names_the_slide_and_case(make_planted, meta_for, tmp_path):
    labels, X, _ = make_planted(n=12)
    X = X.astype(np.float32)
    X[5, -1] = np.nan  # "an embeddings table with a NaN end"
    X[7, 0] = np.inf
    write_embeddings(tmp_path / "e.parquet", meta_for(labels.case_id), X)
    with pytest.raises(InputError, match="non-finite") as ei:
        load_inputs(tmp_path / "e.parquet", labels, "er_status")
    assert "case005_HE" in str(ei.value) and "case007" in str(ei.value)
    assert "'embedding'" in str(ei.value) and ei.value.hint


def test_labels_with_an_infinite_survival_time_are_refused_by_case(make_planted, meta_for):
    labels, X, _ = make_planted(n=12)
    labels.loc[3, "os_time"] = np.inf
    with pytest.raises(InputError, match=r"column 'os_time' has a non-finite value \(case case003"):
        load_inputs((meta_for(labels.case_id), X), labels, "os")
