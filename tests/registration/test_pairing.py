"""Location pairing and registration-table helpers on constructed data with a known transform."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cscl.errors import InputError
from cscl.registration import (
    MATRIX_COLUMNS,
    apply_affine,
    invert_affine,
    load_registrations,
    matrix_of,
    pair_by_location,
    write_registrations,
)


def _rigid(angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a), tx], [np.sin(a), np.cos(a), ty]])


def _grid(n: int, step: float) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(n) * step, np.arange(n) * step)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def test_apply_affine_and_inverse_roundtrip():
    m = _rigid(30, 100, -50)
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [3.0, 7.0]])
    out = apply_affine(m, pts)
    np.testing.assert_allclose(out[0], [100, -50])
    np.testing.assert_allclose(out[1], [100 + 10 * np.cos(np.pi / 6), -50 + 10 * np.sin(np.pi / 6)])
    np.testing.assert_allclose(apply_affine(invert_affine(m), out), pts, atol=1e-9)
    with pytest.raises(ValueError):
        apply_affine(np.eye(3), pts)


def test_pairing_recovers_known_rotation_with_top_left_coords():
    """IHC patches are the H&E patches moved by a known rotation: every pair must be recovered,
    even though the IHC grid is shuffled and corners (not centres) are stored."""
    rng = np.random.default_rng(0)
    size = 256.0
    he_tl = _grid(12, size)  # 144 H&E patches, top-left corners
    m = _rigid(37.0, 5000.0, 1200.0)
    ihc_centres = apply_affine(m, he_tl + size / 2)
    perm = rng.permutation(len(he_tl))
    ihc_tl = (ihc_centres - size / 2)[perm]
    he_idx, ihc_idx = pair_by_location(
        he_tl, ihc_tl, m, max_dist=size / 2, he_patch_size_level0=size, ihc_patch_size_level0=size
    )
    assert len(he_idx) == len(he_tl)
    np.testing.assert_array_equal(he_idx, np.arange(len(he_tl)))
    np.testing.assert_array_equal(perm[ihc_idx], he_idx)

    # Corners without sizes: a 37° rotation moves corners off the IHC corners → wrong/missing pairs.
    he2, ihc2 = pair_by_location(he_tl, ihc_tl, m, max_dist=size / 4)
    assert len(he2) < len(he_tl) or not np.array_equal(perm[ihc2], he2)


def test_pairing_drops_far_patches_and_is_one_to_one():
    m = _rigid(0, 0, 0)
    he = np.array([[0.0, 0.0], [10.0, 0.0], [1000.0, 1000.0]])
    ihc = np.array([[4.0, 0.0], [500.0, 500.0]])
    he_idx, ihc_idx = pair_by_location(he, ihc, m, max_dist=20)
    # Both H&E 0 and 1 are near IHC 0; one-to-one keeps the closer (H&E 0); H&E 2 is too far.
    assert he_idx.tolist() == [0] and ihc_idx.tolist() == [0]
    he_idx, ihc_idx = pair_by_location(he, ihc, m, max_dist=20, one_to_one=False)
    assert he_idx.tolist() == [0, 1] and ihc_idx.tolist() == [0, 0]
    e_he, e_ihc = pair_by_location(np.zeros((0, 2)), ihc, m, max_dist=20)
    assert e_he.size == 0 and e_ihc.size == 0 and e_he.dtype == np.int64


def test_pairing_under_noise_matches_true_neighbours():
    """With registration error well under half a patch, one-to-one pairing stays exact."""
    rng = np.random.default_rng(1)
    size = 224.0
    he = _grid(10, size)
    m_true = _rigid(-120.0, 9000.0, 4000.0)
    ihc = apply_affine(m_true, he + size / 2) - size / 2 + rng.normal(0, 5, size=he.shape)
    m_est = m_true.copy()
    m_est[:, 2] += [20.0, -15.0]  # a 25 px registration error
    he_idx, ihc_idx = pair_by_location(he, ihc, m_est, size / 2, size, size)
    assert len(he_idx) == len(he)
    np.testing.assert_array_equal(ihc_idx, he_idx)


def test_load_registrations_accepts_transforms_and_registration_tables(tmp_path):
    m = _rigid(15, 10, 20)
    tr = pd.DataFrame(
        {
            "case_id": ["001", "001"],
            "stain": ["her2", "KI67"],
            "angle_deg": [15, 15],
            "tx": [10, 10],
            "ty": [20, 20],
            **{c: [v, v] for c, v in zip(MATRIX_COLUMNS, m.ravel(), strict=True)},
        }
    )
    tr.to_csv(tmp_path / "transforms.csv", index=False)
    df = load_registrations(tmp_path / "transforms.csv")
    assert df["ok"].dtype == bool and df["ok"].all()
    assert df["case_id"].tolist() == ["001", "001"]  # leading zeros kept
    assert df["stain"].tolist() == ["HER2", "KI67"]
    np.testing.assert_allclose(matrix_of(df.iloc[0]), m)
    np.testing.assert_allclose(matrix_of(next(df.itertuples())), m)

    reg = df.drop(columns=["angle_deg", "tx", "ty"]).assign(
        he_slide_id=["001_HE"] * 2,
        ihc_slide_id=["001_HER2", "001_KI67"],
        score=[0.9, 0.2],
        ok=[True, False],
        error_um=[np.nan, np.nan],
        message=["", "low overlap"],
    )
    write_registrations(tmp_path / "registration.csv", reg)
    back = load_registrations(tmp_path / "registration.csv")
    assert back["ok"].tolist() == [True, False]
    assert back["message"].tolist() == ["", "low overlap"]
    assert list(back.columns[:4]) == ["case_id", "stain", "he_slide_id", "ihc_slide_id"]


def test_load_registrations_errors_name_the_problem(tmp_path):
    p = tmp_path / "bad.csv"
    pd.DataFrame({"case_id": ["a"], "stain": ["HER2"], "m00": [1.0]}).to_csv(p, index=False)
    with pytest.raises(InputError, match="m01"):
        load_registrations(p)
    with pytest.raises(InputError, match="m02"):
        matrix_of({"m00": 1, "m01": 0, "m10": 0, "m11": 1, "m12": 0})


def test_failed_rows_without_matrix_are_not_ok(tmp_path):
    p = tmp_path / "registration.csv"
    pd.DataFrame(
        {
            "case_id": ["a"],
            "stain": ["HER2"],
            "m00": [np.nan],
            "m01": [np.nan],
            "m02": [np.nan],
            "m10": [np.nan],
            "m11": [np.nan],
            "m12": [np.nan],
            "ok": [True],
        }
    ).to_csv(p, index=False)
    assert not load_registrations(p)["ok"].iloc[0]
