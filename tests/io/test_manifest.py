import numpy as np
import pandas as pd
import pytest

from cscl.errors import InputError
from cscl.io.manifest import load_labels, load_manifest, survival_arrays, validate_manifest


def _write(tmp_path, rows, name="manifest.csv"):
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def test_relative_uris_resolve_against_manifest_folder(tmp_path):
    p = _write(tmp_path, [{"case_id": "c1", "stain": "H&E", "slide_uri": "slides/c1_HE.svs"}])
    df = load_manifest(str(p))
    assert df.loc[0, "stain"] == "HE"
    assert df.loc[0, "slide_uri"] == str(tmp_path / "slides" / "c1_HE.svs")
    assert df.loc[0, "slide_id"] == "c1_HE"
    assert np.isnan(df.loc[0, "mpp"])


def test_missing_column_is_named(tmp_path):
    p = _write(tmp_path, [{"case_id": "c1", "slide_uri": "a.svs"}])
    with pytest.raises(InputError, match=r"missing column\(s\) \['stain'\]"):
        load_manifest(str(p))


@pytest.mark.parametrize(
    "rows, pattern",
    [
        (
            [{"case_id": "c1", "stain": "HE", "slide_uri": "a.svs", "mpp": -1}],
            "mpp must be a positive",
        ),
        ([{"case_id": "c1", "stain": "HE", "slide_uri": "a.svs"}] * 2, "not unique"),
        (
            [
                {"case_id": "c1", "stain": "HE", "slide_uri": "a.svs"},
                {"case_id": "c1", "stain": "HE", "slide_uri": "b.svs"},
            ],
            "more than one HE",
        ),
        ([{"case_id": "", "stain": "HE", "slide_uri": "a.svs"}], "empty case_id"),
        ([{"case_id": "c", "stain": "her 2", "slide_uri": "a.svs"}], "invalid stain"),
    ],
)
def test_bad_manifests(rows, pattern):
    with pytest.raises(InputError, match=pattern):
        validate_manifest(pd.DataFrame(rows))


def test_s3_relative_resolution():
    from cscl.io.storage import resolve_relative

    assert (
        resolve_relative("slides/x.svs", "s3://b/p/cohorts/c/manifest.csv")
        == "s3://b/p/cohorts/c/slides/x.svs"
    )
    assert resolve_relative("s3://o/k.svs", "s3://b/m.csv") == "s3://o/k.svs"


def test_survival_checks(tmp_path):
    p = _write(
        tmp_path,
        [
            {"case_id": "a", "os_time": 3.0, "os_event": 1},
            {"case_id": "b", "os_time": 0, "os_event": 0},
        ],
        "labels.csv",
    )
    labels = load_labels(str(p))
    with pytest.raises(InputError, match="must be > 0"):
        survival_arrays(labels, "os")
    labels.loc[1, "os_time"] = 2.0
    labels.loc[1, "os_event"] = 2
    with pytest.raises(InputError, match="0 or 1"):
        survival_arrays(labels, "os")
