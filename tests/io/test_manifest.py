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


def test_percent_encoded_file_uris_find_the_file(tmp_path):
    """`Path.as_uri()` writes a space as %20 (and # as %23): such a URI names an existing file."""
    from cscl.io import storage

    folder = tmp_path / "my cohort #1"
    folder.mkdir()
    slide = folder / "case 1 HE.svs"
    slide.write_bytes(b"slide bytes")
    uri = slide.as_uri()
    assert "%20" in uri and "%23" in uri
    assert storage.local_path(uri) == slide
    assert storage.exists(uri) and storage.read_bytes(uri) == b"slide bytes"
    assert storage.stat(uri).size == len(b"slide bytes") and storage.fetch(uri) == slide
    pd.DataFrame([{"case_id": "c1", "er_status": "Positive"}]).to_csv(folder / "l.csv", index=False)
    assert load_labels((folder / "l.csv").as_uri())["er_status"].tolist() == ["positive"]
    man = folder / "manifest.csv"
    pd.DataFrame([{"case_id": "c1", "stain": "HE", "slide_uri": uri}]).to_csv(man, index=False)
    df = load_manifest(man.as_uri())
    assert df.loc[0, "slide_id"] == "case 1 HE"
    assert storage.local_path(df.loc[0, "slide_uri"]) == slide


@pytest.mark.parametrize("mpp", ["inf", "-inf", "nan-ish"])
def test_non_finite_or_bad_mpp_names_the_slide(mpp):
    rows = [{"case_id": "c", "stain": "HE", "slide_uri": "a.svs", "mpp": mpp}]
    with pytest.raises(InputError, match=r"mpp must be a positive, finite number.*a\.svs") as ei:
        validate_manifest(pd.DataFrame(rows))
    assert "µm/px" in ei.value.hint


def test_registration_table_with_an_infinite_matrix_entry_names_the_pair(tmp_path):
    from cscl.registration import load_registrations

    cols = "case_id,stain,m00,m01,m02,m10,m11,m12,ok"
    p = tmp_path / "registration.csv"
    p.write_text(f"{cols}\nc1,ER,1,0,0,0,1,0,True\nc2,HER2,1,0,inf,0,1,0,True\nc3,ER,,,,,,,False\n")
    with pytest.raises(InputError, match=r"column 'm02' is infinite.*\['c2', 'HER2'\]"):
        load_registrations(str(p))
    p.write_text(f"{cols}\nc1,ER,1,0,0,0,1,0,True\nc3,ER,,,,,,,False\n")
    assert load_registrations(str(p))["ok"].tolist() == [True, False]  # NaN = failed pair, no error
