"""Labels are normalised once when loaded: one spelling per class, mapped values reported,
unmappable and non-finite values refused with the case and the column named."""

from __future__ import annotations

import pandas as pd
import pytest

from cscl.errors import InputError
from cscl.io.manifest import label_notes, load_labels, survival_arrays

ROWS = """case_id,split,subtype,er_status,ki67_status,her2_status,os_time,os_event
c1,train,LumA,positive,high,1,10,1
c2 ,train,luma ,POSITIVE,Low,0,12.5,0
c3,test,LumA,Positive ,HIGH,+,3,yes
c4,test,TNBC,neg,low,FALSE,4,0
c5,test,TNBC,\u2212,,Neg,,
c6,test,LumB,-,low,pos,7,no
"""


def _labels(tmp_path, text: str, name: str = "labels.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_status_spellings_and_synonyms_become_one_class_with_a_note(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        df = load_labels(str(_labels(tmp_path, ROWS)))
    assert df["er_status"].tolist() == ["positive"] * 3 + ["negative"] * 3
    assert df["her2_status"].tolist() == ["positive", "negative", "positive", "negative"] * 1 + [
        "negative",
        "positive",
    ]
    assert df["ki67_status"].tolist()[:4] == ["high", "low", "high", "low"]
    assert pd.isna(df.loc[4, "ki67_status"])  # an empty cell is a missing label, not a class
    assert df["subtype"].tolist() == ["LumA", "LumA", "LumA", "TNBC", "TNBC", "LumB"]
    assert df["case_id"].tolist()[1] == "c2"
    assert df["os_event"].tolist()[:4] == [1, 0, 1, 0]
    notes = label_notes(df)
    er = next(n for n in notes if n.startswith("er_status: mapped"))
    assert "'POSITIVE': 'positive'" in er and "'Positive ': 'positive'" in er
    assert "'\u2212': 'negative'" in er and "'neg': 'negative'" in er
    assert any(n.startswith("subtype: mapped {'luma ': 'LumA'}") for n in notes)
    assert not any(n.startswith("split") for n in notes)  # nothing to map: no note
    assert "er_status: mapped" in caplog.text


def test_in_memory_tables_get_the_same_normalisation(tmp_path):
    table = pd.DataFrame(
        {"case_id": [1, 2, 3], "er_status": [1, 0, 1], "pgr_status": ["Pos", "NEG", None]}
    )
    df = load_labels(table)
    assert df["case_id"].tolist() == ["1", "2", "3"]
    assert df["er_status"].tolist() == ["positive", "negative", "positive"]
    assert df["pgr_status"].tolist()[:2] == ["positive", "negative"]
    assert "er_status: mapped {1: 'positive', 0: 'negative'}" in label_notes(df)


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [
        ("er_status", "equivocal", "must be a positive/negative status"),
        ("ki67_status", "medium", "must be a high/low status"),
        ("her2_status", "2", "must be a positive/negative status"),
        ("os_event", "2", "must be 0 or 1"),
        ("os_time", "abc", "non-numeric"),
        ("os_time", "inf", "non-finite"),
        ("os_time", "-Infinity", "non-finite"),
    ],
)
def test_unmappable_or_non_finite_values_name_case_column_and_value(tmp_path, column, value, kind):
    good = ROWS
    header = good.splitlines()[0].split(",")
    row = ["c9", "test", "LumA", "positive", "high", "positive", "5", "1"]
    row[header.index(column)] = value
    p = _labels(tmp_path, good + ",".join(row) + "\n")
    with pytest.raises(InputError, match=kind) as ei:
        load_labels(str(p))
    msg = str(ei.value)
    assert "case c9" in msg and repr(column) in msg and str(p) in msg
    if kind != "non-finite":
        assert repr(value) in msg
    assert ei.value.hint


def test_non_finite_in_any_numeric_label_column_is_refused(tmp_path):
    p = _labels(tmp_path, "case_id,age,er_status\na,50,positive\nb,-inf,negative\n")
    with pytest.raises(InputError, match=r"column 'age' has a non-finite value \(case b"):
        load_labels(str(p))
    df = pd.DataFrame({"case_id": ["a", "b"], "score": [0.5, float("inf")]})
    with pytest.raises(InputError, match="column 'score'.*case b"):
        load_labels(df)


def test_survival_errors_name_the_cases(tmp_path):
    df = load_labels(
        pd.DataFrame({"case_id": ["a", "b"], "os_time": [3.0, 0.0], "os_event": [1, 0]})
    )
    with pytest.raises(InputError, match=r"os_time must be > 0.*\['b'\]"):
        survival_arrays(df, "os")


def test_labels_for_served_requests_are_normalised_like_training_labels(tmp_path):
    """Target drift compares them with the training labels: 'POSITIVE' must not look like drift."""
    from types import SimpleNamespace

    from cscl.monitoring.labels import load_window_labels

    p = _labels(tmp_path, "slide_id,er_status\ns1,POSITIVE\ns2 ,neg\n", "late.csv")
    window = SimpleNamespace(slide_ids=["s1", "s2", "s3"], request_ids=["r1", "r2", "r3"])
    out = load_window_labels(str(p), window)
    assert out["label__er_status"].tolist() == ["positive", "negative", None]
    p.write_text("slide_id,er_status\ns1,maybe\n")
    with pytest.raises(InputError, match="'maybe'.*case s1"):
        load_window_labels(str(p), window)
