"""cscl.validation: the Great Expectations gate on a real tiny cohort served from S3."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from cscl.errors import InputError
from cscl.ingest import ingest_cohort, upload_folder
from cscl_platform.validation import validate_cohort


def test_good_cohort_passes_and_writes_report(s3_cohort, s3_endpoint, tmp_path):
    index = ingest_cohort(s3_cohort, progress=False).index
    labels = s3_cohort.replace("manifest.csv", "labels.csv")
    res = validate_cohort(index, labels, tmp_path / "v")
    assert res.success, res.summary()
    assert res.metrics["n_slides"] == 6 and res.metrics["n_cases"] == 3
    assert res.metrics["n_slides_unreadable"] == 0
    assert res.metrics["pass_rate"] == 1.0
    qc = res.qc.set_index("slide_id")
    assert qc["opens"].all() and (qc["mpp"] == 0.5).all() and (qc["tissue_fraction"] > 0.05).all()
    page = (tmp_path / "v" / "report.html").read_text()
    assert "PASSED" in page and "expect_column_values_to_be_in_set" in page
    # checks in words, and every slide's picture with its tissue outline
    assert "every slide has a resolution between 0.1 µm/px and 2 µm/px" in page
    assert "every case has an H&amp;E slide" in page and "no case is labelled twice" in page
    assert "every labelled case&#x27;s er_status is one of: positive, negative" in page
    assert page.count("<img src='data:image/jpeg") == 6
    for sid in qc.index:
        with Image.open(tmp_path / "v" / "qc" / f"{sid}.png") as im:
            assert max(im.size) >= 1000  # the synthetic slides are 1536 px: ≥ 1000, not the mask
    saved = json.loads((tmp_path / "v" / "results.json").read_text())
    assert saved["success"] and len(saved["results"]) == res.metrics["expectations_total"]


def test_bad_cohort_fails_naming_each_problem(tiny_cohort_dir, s3_endpoint, tmp_path):
    """A case without H&E, an illegal label, a negative survival time and a non-slide."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_cohort_dir, bad)
    m = pd.read_csv(bad / "manifest.csv")
    m = m[~((m.case_id == "case001") & (m.stain == "HE"))]
    m.to_csv(bad / "manifest.csv", index=False)
    (bad / "slides" / "case002_HER2.svs").write_bytes(b"this is not a slide")
    lab = pd.read_csv(bad / "labels.csv")
    lab.loc[0, "er_status"] = "maybe"
    lab.loc[1, "os_time"] = -3
    lab.to_csv(bad / "labels.csv", index=False)
    upload_folder(bad, "s3://cohort-bucket/bad")
    index = ingest_cohort("s3://cohort-bucket/bad/manifest.csv").index
    res = validate_cohort(index, "s3://cohort-bucket/bad/labels.csv", tmp_path / "v")
    assert not res.success
    failed = {(f["table"], f["expectation"], f["column"]) for f in res.failures}
    assert ("slides", "expect_column_values_to_be_in_set", "case_has_he") in failed
    assert ("labels", "expect_column_values_to_be_in_set", "er_status") in failed
    assert ("labels", "expect_column_values_to_be_between", "os_time") in failed
    assert ("slide_qc", "expect_column_values_to_be_in_set", "opens") in failed
    text = res.summary()
    assert "maybe" in text and "FAILED" in text and "every case has an H&E slide" in text
    qc = res.qc.set_index("slide_id")
    assert not qc.loc["case002_HER2", "opens"] and qc.loc["case002_HER2", "error"]
    page = (tmp_path / "v" / "report.html").read_text()
    assert "FAILED" in page
    # failed checks come first, each said in words; the slide that does not open comes first
    checks = page[page.index("<h2>Checks") : page.index("<h2>Slides")]
    assert checks.rindex("class=bad") < checks.index("class=ok")
    first_bad = checks[checks.index("class=bad") :]
    assert first_bad.index("every case has an H&amp;E slide") < first_bad.index("class=ok")
    slides = page[page.index("<h2>Slides") :]
    assert slides.index("case002_HER2") < slides.index("case000_HE")
    assert "does not open" in slides and "no picture" in slides
    assert slides.count("<img src='data:image/jpeg") == len(res.qc) - 1
    assert "[False] in case001_HER2" in checks  # the rows to fix are named
    assert "every labelled case has an os_time above 0" in checks
    assert "[-3.0] in case" in checks
    # Lowering the gate lets the same cohort through, with the same failures reported.
    low = validate_cohort(
        index,
        "s3://cohort-bucket/bad/labels.csv",
        qc=res.qc,
        min_pass_rate=0.5,
    )
    assert low.success and len(low.failures) == len(res.failures)


def test_mpp_out_of_range_fails(s3_cohort, s3_endpoint):
    index = ingest_cohort(s3_cohort, progress=False).index
    index["mpp"] = 5.0  # a manifest override that claims 2x magnification
    res = validate_cohort(index)
    assert not res.success
    assert any(f["column"] == "mpp" for f in res.failures)


def test_gate_argument_checked(s3_cohort, s3_endpoint):
    index = ingest_cohort(s3_cohort, progress=False).index
    with pytest.raises(InputError, match="min_pass_rate"):
        validate_cohort(index, run_slide_qc=False, min_pass_rate=1.5)
