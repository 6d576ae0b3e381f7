"""The refined map (matrix + displacement field), its storage, landmarks and rTRE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cscl.errors import InputError
from cscl.io.manifest import load_manifest
from cscl.registration import (
    MATRIX_COLUMNS,
    DisplacementField,
    RegisterParams,
    Transform,
    load_registrations,
    pair_by_location,
    register_manifest,
    transform_of,
)
from cscl.registration.io import apply_affine
from cscl.registration.quality import read_landmarks, rtre
from cscl.registration.transform import load_field, save_field

ROT = np.array([[0.99, -0.05, 30.0], [0.05, 0.99, -12.0]])


def _field(dx: float, dy: float) -> DisplacementField:
    """A constant field on a 10×8 grid of 100-px cells over H&E level 0."""
    grid = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 50.0]])
    return DisplacementField(
        np.full((8, 10), dx, np.float32), np.full((8, 10), dy, np.float32), grid
    )


def test_transform_applies_field_before_matrix():
    pts = np.array([[10.0, 20.0], [500.0, 300.0], [2000.0, 5000.0]])  # last one off the grid
    assert np.allclose(Transform(ROT).apply(pts), apply_affine(ROT, pts))
    moved = Transform(ROT, _field(3.0, -2.0)).apply(pts)
    assert np.allclose(moved, apply_affine(ROT, pts + [3.0, -2.0]), atol=1e-4)


def test_field_round_trips_and_registration_rows_resolve_it(tmp_path):
    save_field(str(tmp_path / "fields" / "c1_HER2.npz"), _field(1.5, 0.5))
    back = load_field(str(tmp_path / "fields" / "c1_HER2.npz"))
    assert np.allclose(back.dx, 1.5) and np.allclose(
        back.grid_to_level0, _field(0, 0).grid_to_level0
    )
    row = {
        "case_id": "c1",
        "stain": "HER2",
        **dict(zip(MATRIX_COLUMNS, ROT.ravel(), strict=True)),
    }
    pd.DataFrame(
        [row | {"field_uri": "fields/c1_HER2.npz"}, row | {"stain": "KI67", "field_uri": ""}]
    ).to_csv(tmp_path / "registration.csv", index=False)
    df = load_registrations(tmp_path / "registration.csv")
    t = transform_of(df.iloc[0])
    assert t.field is not None and np.allclose(t.field.dy, 0.5)
    assert transform_of(df.iloc[1]).field is None  # no field: the matrix alone
    (tmp_path / "bad.npz").write_bytes(b"not a field")
    with pytest.raises(InputError, match="bad.npz"):
        load_field(str(tmp_path / "bad.npz"))


def test_pairing_follows_the_field():
    """Centres displaced by a field pair up only when the field is used."""
    he = np.stack(np.meshgrid(np.arange(5) * 200.0, np.arange(4) * 200.0), -1).reshape(-1, 2)
    t = Transform(np.eye(2, 3), _field(120.0, 0.0))
    ihc = t.apply(he)
    he_idx, ihc_idx = pair_by_location(he, ihc, t, max_dist=50)
    assert len(he_idx) == len(he) and (he_idx == ihc_idx).all()
    he_a, ihc_a = pair_by_location(he, ihc, np.eye(2, 3), max_dist=50)
    assert len(he_a) == 0


def test_rtre_and_landmark_files(tmp_path):
    he = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [50.0, 50.0]])
    ihc = apply_affine(ROT, he)
    ihc[3] += [3.0, 4.0]  # one landmark 5 px off
    med, mx = rtre(ROT, he, ihc, (300, 400))
    assert med == pytest.approx(0.0) and mx == pytest.approx(5.0 / 500.0)
    p = tmp_path / "lm.csv"
    pd.DataFrame({"X": he[:, 0], "Y": he[:, 1]}).to_csv(p)  # ANHIR: unnamed index column first
    assert np.allclose(read_landmarks(str(p)), he)
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="need columns X and Y"):
        read_landmarks(str(tmp_path / "bad.csv"))


def test_landmark_folder_gives_rtre_columns(tmp_path):
    """`landmarks` folder of <slide_id>.csv: synthetic landmarks from the true transforms."""
    from cscl.synthetic.testing import tiny_cohort

    man = tiny_cohort(tmp_path / "coh", n_cases=1, seed=5, stains=("HE", "HER2"))
    m = load_manifest(str(man))
    truth = load_registrations(man.parent / "transforms.csv").iloc[0]
    rng = np.random.default_rng(0)
    he_pts = rng.uniform([500, 400], [1500, 1100], size=(30, 2))
    ihc_pts = apply_affine(transform_of(truth).matrix, he_pts)
    lm = tmp_path / "landmarks"
    lm.mkdir()
    ids = dict(zip(m["stain"], m["slide_id"], strict=True))
    pd.DataFrame({"X": he_pts[:, 0], "Y": he_pts[:, 1]}).to_csv(lm / f"{ids['HE']}.csv")
    pd.DataFrame({"X": ihc_pts[:, 0], "Y": ihc_pts[:, 1]}).to_csv(lm / f"{ids['HER2']}.csv")
    df = register_manifest(
        str(man), str(tmp_path / "reg"), params=RegisterParams(landmarks=str(lm)), progress=False
    )
    r = df.iloc[0]
    print(f"synthetic rTRE {r.rtre_before_median:.4f} → {r.rtre_median:.5f}")
    assert r.n_landmarks == 30 and r.ok
    assert r.rtre_median < 0.002 < r.rtre_before_median  # 2000×1500 px: 0.002 ≈ 5 px


def test_affine_falls_back_to_rigid_when_the_qc_disagrees(reg_cohort, monkeypatch):
    """A runaway affine fit (here: a 35 % stretch injected into the estimate) is not kept."""
    import cscl.registration.register as reg_mod
    from cscl.io.manifest import load_manifest as _load

    m = _load(str(reg_cohort))
    he_uri = m.loc[m["stain"] == "HE", "slide_uri"].iloc[0]
    ihc_uri = m.loc[m["stain"] == "HER2", "slide_uri"].iloc[0]
    he, ihc = reg_mod.read_thumb(he_uri), reg_mod.read_thumb(ihc_uri)
    real = reg_mod.estimate_transform

    def runaway(*a, **k):
        est = real(*a, **k)
        est.matrix = est.matrix @ np.array([[1.35, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        return est

    monkeypatch.setattr(reg_mod, "estimate_transform", runaway)
    aff = reg_mod.register_thumbs(he, ihc, affine=True, nonrigid=False)
    monkeypatch.setattr(reg_mod, "estimate_transform", real)
    rigid = reg_mod.register_thumbs(he, ihc, nonrigid=False)
    assert aff.steps["affine_kept"] is False
    assert np.allclose(aff.matrix, rigid.matrix) and aff.ok
    assert not reg_mod.plausible_affine(np.array([[1.35, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert reg_mod.plausible_affine(np.array([[1.03, 0.02, 5.0], [-0.01, 0.97, 2.0]]))
