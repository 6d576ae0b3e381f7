"""load_cohort: grouping, masking of missing IHC, and clear errors for bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from cscl.data import load_cohort
from cscl.errors import InputError
from cscl.features import SlideFeatures, read_features, write_features


def _copy(sim, tmp_path):
    fdir = tmp_path / "features"
    shutil.copytree(sim["features"], fdir)
    man = pd.read_csv(sim["manifest"])
    return fdir, man


def test_cohort_groups_cases_and_fingerprints(cohort, sim):
    man = pd.read_csv(sim["manifest"])
    assert len(cohort.cases) == man["case_id"].nunique()
    assert cohort.stains[0] == "HE" and set(cohort.stains[1:]) <= {"ER", "PGR", "HER2", "KI67"}
    assert cohort.dim == 32 and len(cohort.fingerprint) == 16
    again = load_cohort(sim["features"], str(sim["manifest"]))
    assert again.fingerprint == cohort.fingerprint


def test_missing_ihc_stain_is_masked(sim, tmp_path):
    fdir, man = _copy(sim, tmp_path)
    drop = man[(man["case_id"] == "case0000") & (man["stain"] != "HE")].index
    man = man.drop(drop[:2])
    man.to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "slides").mkdir()
    c = load_cohort(fdir, str(tmp_path / "m.csv"))
    case0 = next(c for c in c.cases if c.case_id == "case0000")
    assert len(case0.ihc) == len(man[(man.case_id == "case0000") & (man.stain != "HE")])


def test_mixed_extractor_hashes_is_an_error(sim, tmp_path):
    fdir, man = _copy(sim, tmp_path)
    sid = man["slide_uri"].iloc[1].split("/")[-1].rsplit(".", 1)[0]
    sf = read_features(fdir / f"{sid}.h5")
    sf.extractor_hash = "other-backbone"
    write_features(fdir / f"{sid}.h5", sf)
    with pytest.raises(InputError, match="different extractors"):
        load_cohort(fdir, str(sim["manifest"]))


def test_missing_feature_file_names_it(sim, tmp_path):
    fdir, man = _copy(sim, tmp_path)
    (fdir / "case0001_HE.h5").unlink()
    with pytest.raises(InputError, match="case0001_HE.h5") as ei:
        load_cohort(fdir, str(sim["manifest"]))
    assert "cscl extract" in str(ei.value)
    with pytest.warns(UserWarning, match="missing"):
        c = load_cohort(fdir, str(sim["manifest"]), on_missing_file="skip")
    assert "case0001" not in {x.case_id for x in c.cases}
    assert any("case0001" in s for s in c.skipped)


def test_case_without_he_skipped_or_error(sim, tmp_path):
    fdir, man = _copy(sim, tmp_path)
    man = man[~((man.case_id == "case0002") & (man.stain == "HE"))]
    man.to_csv(tmp_path / "m.csv", index=False)
    with pytest.warns(UserWarning, match="no H&E"):
        c = load_cohort(fdir, str(tmp_path / "m.csv"))
    assert "case0002" not in {x.case_id for x in c.cases}
    with pytest.raises(InputError, match="no H&E"):
        load_cohort(fdir, str(tmp_path / "m.csv"), on_missing_he="error")


def test_registration_rows_not_ok_are_excluded(sim, tmp_path, regs):
    c = load_cohort(sim["features"], str(sim["manifest"]))
    bad = regs.copy()
    first = bad.index[0]
    bad.loc[first, "ok"] = False
    with pytest.warns(UserWarning, match="ok=False"):
        c.attach_pairs(bad)
    case = next(x for x in c.cases if x.case_id == bad.loc[first, "case_id"])
    assert bad.loc[first, "stain"] not in case.pairs
    with pytest.raises(InputError, match="registration"):
        c.attach_pairs(None, "location")


def test_location_pairs_follow_the_true_transform(cohort, regs):
    from cscl.registration import apply_affine, matrix_of

    cohort.attach_pairs(regs)
    case = cohort.cases[0]
    stain, (hi, ii) = next(iter(case.pairs.items()))
    row = regs[(regs.case_id == case.case_id) & (regs.stain == stain)].iloc[0]
    ps = case.he.patch_size_level0
    mapped = apply_affine(matrix_of(row), case.he.coords[hi] + ps / 2)
    d = np.linalg.norm(mapped - (case.ihc[stain].coords[ii] + ps / 2), axis=1)
    assert len(hi) > 0.5 * case.he.n and (d <= 0.75 * ps).all()


def test_single_feature_file_api_roundtrip(tmp_path):
    sf = SlideFeatures(np.ones((3, 4), np.float32), np.zeros((3, 2), np.int64), "s", "HE", "h", "e")
    write_features(tmp_path / "s.h5", sf)
    assert read_features(tmp_path / "s.h5").features.shape == (3, 4)


def test_simulator_shared_content_changes_only_what_ihc_shares(tmp_path):
    """shared_content "full" vs "type"/"marker": same H&E for the first case, other IHC."""
    from pathlib import Path

    from cscl.train.simulate import SimConfig, simulate_cohort

    kw = dict(n_cases=1, dim=16, grid=6, seed=3, missing_ihc=0.0)
    runs = [simulate_cohort(tmp_path / m, SimConfig(**kw, shared_content=m))
            for m in ("full", "type", "marker")]  # fmt: skip
    he = [read_features(next(Path(d["features"]).glob("*_HE.h5"))).features for d in runs]
    np.testing.assert_array_equal(he[0], he[1])
    np.testing.assert_array_equal(he[0], he[2])
    er = [read_features(next(Path(d["features"]).glob("*_ER.h5"))).features for d in runs]
    assert er[0].shape == er[1].shape == er[2].shape
    assert not np.allclose(er[0], er[1]) and not np.allclose(er[1], er[2])


def test_simulator_writes_ground_truth_and_subtype(tmp_path):
    """truth.csv (patch-label oracle) agrees with the labels; subtype follows the statuses."""
    import pandas as pd

    from cscl.train.simulate import MARKERS, SimConfig, simulate_cohort, subtype_of

    d = simulate_cohort(tmp_path, SimConfig(n_cases=40, dim=16, grid=8, seed=2))
    lab = pd.read_csv(d["labels"]).set_index("case_id")
    truth = pd.read_csv(d["truth"]).set_index("case_id").loc[lab.index]
    from sklearn.metrics import roc_auc_score

    pos = lab["er_status"] == "positive"
    assert roc_auc_score(pos, truth["expr_frac_ER"]) > 0.9
    dirs = np.load(tmp_path / "truth_directions.npz")
    assert dirs["he"].shape == (len(MARKERS), 16)
    row = lab.iloc[0]
    st = [row[c] in ("positive", "high") for c in
          ("er_status", "pgr_status", "her2_status", "ki67_status")]  # fmt: skip
    assert row["subtype"] == subtype_of(*st)
    with pytest.raises(ValueError, match="shared_content"):
        simulate_cohort(tmp_path / "x", SimConfig(n_cases=1, shared_content="texture"))


def test_every_missing_or_truncated_file_is_named_or_skipped(sim, tmp_path):
    """A truncated .h5 is no traceback: with "error" every bad file is listed, with "skip" the
    slide is left out with its reason (what `cscl embed` and training with --skip-missing use)."""
    fdir, _ = _copy(sim, tmp_path)
    (fdir / "case0001_HE.h5").unlink()
    data = (fdir / "case0003_HE.h5").read_bytes()
    (fdir / "case0003_HE.h5").write_bytes(data[: len(data) // 2])
    (fdir / "case0004_HE.h5").write_bytes(b"")
    with pytest.raises(InputError, match="missing or unreadable") as ei:
        load_cohort(fdir, str(sim["manifest"]))
    msg = str(ei.value)
    assert "case0001_HE.h5 (missing)" in msg and "case0003_HE.h5" in msg and "truncated" in msg
    assert "case0004_HE.h5" in msg
    with pytest.warns(UserWarning, match="missing or unreadable"):
        c = load_cohort(fdir, str(sim["manifest"]), on_missing_file="skip")
    assert {"case0001", "case0003", "case0004"}.isdisjoint(x.case_id for x in c.cases)
    assert any(s.startswith("case0003_HE (unreadable") for s in c.skipped)


def test_non_finite_features_are_refused_by_file(tmp_path):
    f = np.ones((4, 3), np.float32)
    f[2, 1] = np.nan
    sf = SlideFeatures(f, np.zeros((4, 2), np.int64), "s", "HE", "h", "e")
    write_features(tmp_path / "s.h5", sf)
    with pytest.raises(InputError, match=r"s\.h5.*'features' has non-finite") as ei:
        read_features(tmp_path / "s.h5")
    assert "patch 2" in str(ei.value) and "cscl extract" in ei.value.hint


def test_embed_goes_on_past_bad_slides_lists_them_and_exits_1(sim, tmp_path, capsys):
    from cscl.cli import main
    from cscl.embed import embed_cohort
    from cscl.embeddings import read_embeddings

    fdir, man = _copy(sim, tmp_path)
    (fdir / "case0001_HE.h5").unlink()
    data = (fdir / "case0003_HE.h5").read_bytes()
    (fdir / "case0003_HE.h5").write_bytes(data[:1000])
    out = tmp_path / "emb.parquet"
    summary = embed_cohort("mean-pool", fdir, str(sim["manifest"]), out, quiet=True)
    n_he = int((man["stain"] == "HE").sum())
    meta, X = read_embeddings(out)
    assert summary.n_embedded == len(meta) == n_he - 2 and np.isfinite(X).all()
    assert {"case0001", "case0003"}.isdisjoint(meta["case_id"])
    assert [f.split(" ")[0] for f in summary.failed] == ["case0001_HE", "case0003_HE"]
    argv = ["embed", "--model", "mean-pool", "--features", str(fdir)]
    argv += ["--manifest", str(sim["manifest"]), "--out", str(tmp_path / "cli.parquet"), "--quiet"]
    assert main(argv) == 1
    cap = capsys.readouterr()
    assert f"{n_he - 2} slide(s) embedded, 2 failed" in cap.out
    assert "FAILED case0001_HE (no feature file)" in cap.err and "FAILED case0003_HE" in cap.err
    assert (tmp_path / "cli.parquet").exists()
