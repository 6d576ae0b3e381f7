"""Registration of synthetic cohorts against their true transforms, and flagging of bad pairs."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cscl.cli import main
from cscl.errors import InputError
from cscl.registration import (
    REGISTRATION_COLUMNS,
    RegisterParams,
    load_registrations,
    matrix_of,
    register_manifest,
    register_pair,
)
from cscl.registration.quality import landmark_error_um


def _blank_slide(path):
    from cscl.synthetic.tiff_writer import write_pyramid

    write_pyramid(path, 1200, 900, lambda x, y, w, h: np.full((h, w, 3), 243, np.uint8), mpp=0.5)
    return path


def test_register_manifest_matches_true_transforms(reg_cohort, reg_run):
    df, out = reg_run
    truth = load_registrations(reg_cohort.parent / "transforms.csv")
    assert list(df.columns) == list(REGISTRATION_COLUMNS)
    assert len(df) == len(truth) == 6
    assert df["ok"].all(), df["message"].tolist()
    assert (df["score"] > 0.95).all()
    err = df["error_um"].to_numpy(float)
    print(f"registration error µm: median {np.median(err):.2f}, max {err.max():.2f}")
    assert np.median(err) < 5.0 and err.max() < 15.0
    # the error column is what it says: recompute it independently on a grid of H&E points
    xs, ys = np.meshgrid(np.linspace(300, 1700, 8), np.linspace(300, 1200, 6))
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    for r, t in zip(df.itertuples(), truth.itertuples(), strict=True):
        assert (r.case_id, r.stain) == (t.case_id, t.stain)
        assert landmark_error_um(matrix_of(r), matrix_of(t), grid, 0.5) < 20.0

    back = load_registrations(out / "registration.csv")
    assert back["ok"].all() and back["ihc_slide_id"].tolist() == df["ihc_slide_id"].tolist()
    meta = json.loads((out / "registration.json").read_text())
    assert all(p["texture_ncc"] > 0.5 for p in meta["pairs"].values())
    for r in df.itertuples():
        png = out / "overlays" / f"{r.case_id}_{r.stain}.png"
        with Image.open(png) as im:
            assert im.size[0] >= 600 and im.size[1] >= 300
            # not a blank canvas: the thumbnail and outlines are drawn
            assert np.asarray(im.convert("L")).std() > 10


def test_rerun_resumes_without_reading_slides(reg_cohort, reg_run, tmp_path, monkeypatch):
    first, done = reg_run
    out = tmp_path / "reg"
    shutil.copytree(done, out)

    def boom(*a, **k):
        raise AssertionError("slides must not be read again on a resumed run")

    monkeypatch.setattr("cscl.registration.batch.read_thumb", boom)
    again = register_manifest(str(reg_cohort), str(out), progress=False)
    pd.testing.assert_frame_equal(first, again, check_dtype=False)
    # other parameters → no reuse → the slides are read (and here: fail loudly)
    with pytest.raises(AssertionError, match="must not be read"):
        register_manifest(
            str(reg_cohort), str(out), params=RegisterParams(min_score=0.9), progress=False
        )


def test_wrong_missing_and_blank_slides_are_flagged(reg_cohort, tmp_path, capsys):
    cohort = reg_cohort.parent
    _blank_slide(cohort / "slides" / "blank.svs")
    bad = pd.DataFrame(
        {
            "case_id": ["case000", "case000", "case001", "case001", "case002", "case002", "nohe"],
            "stain": ["HE", "HER2", "HE", "HER2", "HE", "KI67", "KI67"],
            "slide_uri": [
                "slides/case000_HE.svs",
                "slides/case001_HER2.svs",  # IHC of ANOTHER case
                "slides/case001_HE.svs",
                "slides/blank.svs",  # no tissue
                "slides/case002_HE.svs",
                "slides/does_not_exist.svs",  # missing file
                "slides/case002_KI67.svs",  # case without H&E
            ],
        }
    )
    manifest = cohort / "manifest_bad.csv"
    bad.to_csv(manifest, index=False)
    out = tmp_path / "bad"
    rc = main(["register", "--manifest", str(manifest), "--out", str(out), "--min-score", "0.8"])
    assert rc == 1  # pairs that could not be registered at all
    text = capsys.readouterr().out
    assert "4 pairs: 0 ok, 1 flagged, 3 failed" in text
    df = load_registrations(out / "registration.csv")
    assert len(df) == 4 and not df["ok"].any()
    by = {(r.case_id, r.stain): r for r in df.itertuples()}
    wrong = by[("case000", "HER2")]
    # flagged by the texture check even without the truth: the masks alone overlap well
    assert "texture" in wrong.message and wrong.score > 0.8
    assert wrong.error_um > 50  # and the true transform confirms it is wrong
    assert "no tissue" in by[("case001", "HER2")].message
    assert "not found" in by[("case002", "KI67")].message
    assert "no H&E" in by[("nohe", "KI67")].message
    for key in by:
        assert math.isnan(by[key].m00) or key == ("case000", "HER2")
        assert (out / "overlays" / f"{key[0]}_{key[1]}.png").exists()


def test_register_pair_api(reg_cohort):
    slides = reg_cohort.parent / "slides"
    truth = load_registrations(reg_cohort.parent / "transforms.csv")
    t = truth[(truth.case_id == "case001") & (truth.stain == "KI67")].iloc[0]
    reg = register_pair(str(slides / "case001_HE.svs"), str(slides / "case001_KI67.svs"))
    assert reg.ok and reg.matrix.shape == (2, 3) and 0.95 < reg.score <= 1.0
    pts = np.array([[500.0, 400.0], [1500.0, 1100.0], [1000.0, 750.0]])
    assert landmark_error_um(reg.matrix, matrix_of(t), pts, 0.5) < 10.0
    missing = register_pair(str(slides / "case001_HE.svs"), str(slides / "nope.svs"))
    assert not missing.ok and "nope.svs" in missing.message and np.isnan(missing.matrix).all()


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """A real S3 API (moto) over HTTP on 127.0.0.1, dummy credentials, a private slide cache."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("CSCL_CACHE_DIR", str(tmp_path / "cache"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_register_manifest_on_s3(reg_cohort, tmp_path, s3, monkeypatch):
    """Manifest, slides, transforms and outputs all in an object store (relative slide URIs)."""
    from cscl.io import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)  # slides are opened through the process store
    storage.s3_client(s3).create_bucket(Bucket="lab")
    src = reg_cohort.parent
    pd.read_csv(src / "manifest.csv").query("case_id == 'case002'").to_csv(
        tmp_path / "m.csv", index=False
    )
    prefix = "s3://lab/cohorts/c"
    storage.upload(tmp_path / "m.csv", f"{prefix}/manifest.csv", s3)
    storage.upload(src / "transforms.csv", f"{prefix}/transforms.csv", s3)
    for s in ("HE", "HER2", "KI67"):
        storage.upload(src / "slides" / f"case002_{s}.svs", f"{prefix}/slides/case002_{s}.svs", s3)
    df = register_manifest(
        f"{prefix}/manifest.csv", "s3://lab/reg", endpoint_url=s3, progress=False
    )
    assert df["ok"].all() and (df["error_um"] < 15).all()  # transforms.csv found beside it
    back = load_registrations("s3://lab/reg/registration.csv", s3)
    assert back["ok"].all() and len(back) == 2
    assert storage.exists("s3://lab/reg/overlays/case002_HER2.png", s3)


def test_two_slides_of_one_stain_in_a_case_is_an_input_error(reg_cohort, tmp_path):
    m = pd.read_csv(reg_cohort)
    m["slide_uri"] = [str(reg_cohort.parent / u) for u in m.slide_uri]
    shutil.copy(reg_cohort.parent / "slides" / "case000_KI67.svs", tmp_path / "second.svs")
    extra = pd.DataFrame(
        {"case_id": ["case000"], "stain": ["HER2"], "slide_uri": [str(tmp_path / "second.svs")]}
    )
    bad = tmp_path / "dup.csv"
    pd.concat([m, extra]).to_csv(bad, index=False)
    with pytest.raises(InputError, match="one stain in a case"):
        register_manifest(str(bad), str(tmp_path / "out"), progress=False)
