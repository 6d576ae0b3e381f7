"""Options of generate_cohort / `cscl synth`: formats, determinism, shifts, missing stains,
resume, and clear errors for bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import openslide
import pandas as pd
import pytest
from _synth_helpers import od_sum, read_level

from cscl.cli import main
from cscl.errors import InputError
from cscl.io.manifest import load_manifest
from cscl.synthetic import ShiftSpec, generate_cohort

SMALL = dict(width=1000, height=800, workers=1, progress=False)


def _md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_same_seed_same_bytes_and_pool_matches_serial(cohort5, tmp_path):
    """case000 does not depend on the number of cases, the other stains or the process pool."""
    seed = json.loads((cohort5.parent / "cohort.json").read_text())["seed"]
    m = generate_cohort(
        tmp_path / "a",
        n_cases=1,
        seed=seed,
        stains=("HE", "KI67"),
        width=1500,
        height=1000,
        workers=2,
        progress=False,
    )
    for stain in ("HE", "KI67"):
        a = m.parent / f"slides/case000_{stain}.svs"
        b = cohort5.parent / f"slides/case000_{stain}.svs"
        assert _md5(a) == _md5(b), stain
    la = pd.read_csv(m.parent / "labels.csv").drop(columns="split")
    lb = pd.read_csv(cohort5.parent / "labels.csv").drop(columns="split").iloc[:1]
    pd.testing.assert_frame_equal(la, lb)
    ta = pd.read_csv(m.parent / "transforms.csv")
    tb = pd.read_csv(cohort5.parent / "transforms.csv")
    tb = tb[(tb["case_id"] == "case000") & (tb["stain"] == "KI67")].reset_index(drop=True)
    pd.testing.assert_frame_equal(ta, tb)


def test_other_seed_other_pixels(tmp_path):
    a = generate_cohort(tmp_path / "a", n_cases=1, seed=1, stains=("HE",), **SMALL)
    b = generate_cohort(tmp_path / "b", n_cases=1, seed=2, stains=("HE",), **SMALL)
    assert _md5(a.parent / "slides/case000_HE.svs") != _md5(b.parent / "slides/case000_HE.svs")


def test_generic_format_has_no_mpp(tmp_path):
    m = generate_cohort(tmp_path / "g", n_cases=1, seed=0, stains=("HE",), fmt="generic", **SMALL)
    path = m.parent / "slides/case000_HE.tif"
    s = openslide.OpenSlide(str(path))
    assert s.properties["openslide.vendor"] == "generic-tiff"
    assert "openslide.mpp-x" not in s.properties
    assert s.level_count >= 3
    assert load_manifest(str(m))["mpp"].tolist() == [0.5]  # the manifest supplies it
    m2 = generate_cohort(
        tmp_path / "g2",
        n_cases=1,
        seed=0,
        stains=("HE",),
        fmt="generic",
        manifest_mpp=False,
        **SMALL,
    )
    assert load_manifest(str(m2))["mpp"].isna().all()


def _tissue_rgb(path) -> np.ndarray:
    img, _ = read_level(path, 1)
    return img[od_sum(img) > 0.1].mean(axis=0)


def test_shifts_change_appearance_only(tmp_path):
    base = generate_cohort(tmp_path / "base", n_cases=1, seed=3, stains=("HE", "KI67"), **SMALL)
    stain = generate_cohort(
        tmp_path / "stain", n_cases=1, seed=3, stains=("HE", "KI67"), shift="stain", **SMALL
    )
    for f in ("labels.csv", "transforms.csv", "manifest.csv"):
        assert (base.parent / f).read_text() == (stain.parent / f).read_text()
    d = np.abs(
        _tissue_rgb(base.parent / "slides/case000_HE.svs")
        - _tissue_rgb(stain.parent / "slides/case000_HE.svs")
    )
    assert d.max() > 8, d

    scan = generate_cohort(
        tmp_path / "scan", n_cases=1, seed=3, stains=("HE",), shift="scanner:0.5", **SMALL
    )
    s = openslide.OpenSlide(str(scan.parent / "slides/case000_HE.svs"))
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.6)
    assert s.dimensions == (833, 667)  # same tissue, bigger pixels

    def nuclei_fraction(shift):
        m = generate_cohort(
            tmp_path / f"comp{shift}", n_cases=1, seed=3, stains=("HE",), shift=shift, **SMALL
        )
        img, _ = read_level(m.parent / "slides/case000_HE.svs", 1)
        return (od_sum(img) > 0.8).mean()

    assert nuclei_fraction("composition:0.8") > 1.3 * nuclei_fraction("composition:-0.8")


def test_shift_spec_parsing():
    assert ShiftSpec.parse(None).is_null
    assert ShiftSpec.parse("stain") == ShiftSpec(stain=0.6)
    assert ShiftSpec.parse("stain:0.5, scanner:0.3,composition:-0.2") == ShiftSpec(0.5, 0.3, -0.2)
    for bad in ("paint", "stain:x", "stain:2", "scanner:-0.1", "stain=0.5"):
        with pytest.raises(InputError):
            ShiftSpec.parse(bad)


def test_missing_ihc_rate(tmp_path):
    m = generate_cohort(
        tmp_path / "miss", n_cases=6, seed=1, stains=("HE", "HER2"), missing_ihc_rate=0.5,
        width=600, height=512, workers=1, progress=False,
    )  # fmt: skip
    man = pd.read_csv(m)
    assert (man["stain"] == "HE").sum() == 6
    n_her2 = (man["stain"] == "HER2").sum()
    assert 0 < n_her2 < 6
    tf = pd.read_csv(m.parent / "transforms.csv")
    assert sorted(tf["case_id"]) == sorted(man.loc[man["stain"] == "HER2", "case_id"])
    assert len(list((m.parent / "slides").iterdir())) == 6 + n_her2


def test_rerun_resumes_and_rejects_other_parameters(tmp_path):
    out = tmp_path / "r"
    m = generate_cohort(out, n_cases=1, seed=0, stains=("HE",), **SMALL)
    slide = m.parent / "slides/case000_HE.svs"
    digest, mtime = _md5(slide), slide.stat().st_mtime_ns
    generate_cohort(out, n_cases=1, seed=0, stains=("HE",), **SMALL)
    assert slide.stat().st_mtime_ns == mtime  # kept, not re-rendered
    slide.unlink()
    generate_cohort(out, n_cases=1, seed=0, stains=("HE",), **SMALL)
    assert _md5(slide) == digest
    with pytest.raises(InputError, match="other parameters"):
        generate_cohort(out, n_cases=1, seed=1, stains=("HE",), **SMALL)
    assert not list((m.parent / "slides").glob(".*"))  # no temporary leftovers


def test_cli_writes_a_cohort(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        ["synth", "--out", str(out), "--cases", "2", "--seed", "0", "--stains", "HE,ER",
         "--width", "800", "--height", "600", "--workers", "1", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    assert "manifest.csv" in capsys.readouterr().out
    assert len(pd.read_csv(out / "manifest.csv")) == 4
    params = json.loads((out / "cohort.json").read_text())
    assert params["stains"] == ["HE", "ER"] and params["seed"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cases", "0"], "--cases"),
        (["--stains", "HER2,KI67"], "lack HE"),
        (["--stains", "HE,CD3"], "unknown stain"),
        (["--width", "100"], "--width"),
        (["--mpp", "0"], "--mpp"),
        (["--shift", "sideways"], "cannot parse shift"),
        (["--missing-ihc-rate", "1.5"], "--missing-ihc-rate"),
        (["--no-mpp"], "--format generic"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_cli_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    rc = main(["synth", "--out", str(tmp_path / "x"), "--quiet", *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "manifest.csv").exists()


def test_failed_slide_is_reported_and_the_rest_kept(tmp_path, monkeypatch):
    from cscl.errors import CsclError
    from cscl.synthetic import render

    real = render.SlideRenderer.render

    def flaky(self, x0, y0, w, h, out=None):
        if self.stain == "KI67":
            raise OSError("disk on fire")
        return real(self, x0, y0, w, h, out=out)

    monkeypatch.setattr(render.SlideRenderer, "render", flaky)
    out = tmp_path / "f"
    msg = r"2 of 4 slide\(s\) failed: case000_KI67.svs: disk on fire; case001_KI67.svs"
    with pytest.raises(CsclError, match=msg):
        generate_cohort(out, n_cases=2, seed=0, stains=("HE", "KI67"), **SMALL | {"width": 600})
    names = sorted(p.name for p in (out / "slides").iterdir())
    assert names == ["case000_HE.svs", "case001_HE.svs"]  # the others finished, no leftovers
    assert not (out / "manifest.csv").exists()
    monkeypatch.setattr(render.SlideRenderer, "render", real)
    generate_cohort(out, n_cases=2, seed=0, stains=("HE", "KI67"), **SMALL | {"width": 600})
    assert len(pd.read_csv(out / "manifest.csv")) == 4
