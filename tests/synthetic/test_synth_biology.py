"""The planted labels follow the documented rules (pure functions: no slides needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cscl.synthetic.biology import labels_frame, make_biology, subtype_of


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    return labels_frame(make_biology(3000, seed=5))


def test_subtype_follows_statuses(big):
    for row in big.itertuples():
        er = row.er_status == "positive"
        her2 = row.her2_status == "positive"
        ki = row.ki67_status == "high"
        if er and not ki and not her2:
            assert row.subtype == "LumA"
        elif er:
            assert row.subtype == "LumB"
        elif her2:
            assert row.subtype == "HER2+"
        else:
            assert row.subtype == "TNBC"
            assert row.pgr_status == "negative"
    assert set(big["subtype"]) == {"LumA", "LumB", "HER2+", "TNBC"}


def test_columns_values_and_survival(big):
    assert list(big.columns) == [
        "case_id", "split", "subtype", "er_status", "pgr_status", "her2_status",
        "ki67_status", "os_time", "os_event",
    ]  # fmt: skip
    assert (big["os_time"] > 0).all()
    assert set(big["os_event"]) == {0, 1}
    assert set(big["split"]) == {"train", "test"}
    assert 0.25 < (big["split"] == "test").mean() < 0.35
    # stratified: every subtype has ~30 % test cases
    frac = big.groupby("subtype")["split"].apply(lambda s: (s == "test").mean())
    assert (frac.between(0.25, 0.35)).all(), frac
    assert big["case_id"].is_unique


def test_correlations_and_risk(big):
    er = big["er_status"] == "positive"
    pgr = big["pgr_status"] == "positive"
    her2 = big["her2_status"] == "positive"
    assert pgr[er].mean() > 0.6 and pgr[~er].mean() == 0.0
    # HER2 only partly depends on ER
    assert 0.1 < her2[er].mean() < her2[~er].mean() < 0.6
    # worse survival for TNBC / HER2+ than LumA: higher event rate per month at risk
    rate = big.groupby("subtype").apply(
        lambda d: d["os_event"].sum() / d["os_time"].sum(), include_groups=False
    )
    assert rate["TNBC"] > rate["LumB"] > rate["LumA"]
    assert rate["HER2+"] > rate["LumA"]
    ki = big["ki67_status"] == "high"
    luma_like = er & ~her2
    r_hi = big[luma_like & ki]
    r_lo = big[luma_like & ~ki]
    assert (
        r_hi["os_event"].sum() / r_hi["os_time"].sum()
        > r_lo["os_event"].sum() / r_lo["os_time"].sum()
    )


def test_deterministic_and_seed_dependent():
    a = labels_frame(make_biology(50, seed=1))
    b = labels_frame(make_biology(50, seed=1))
    c = labels_frame(make_biology(50, seed=2))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_subtype_rule_rejects_impossible_combination():
    with pytest.raises(ValueError):
        subtype_of(er=False, pgr=True, her2=False, ki67_high=False)


def test_positive_fraction_separates_status():
    cases = make_biology(400, seed=3)
    for marker in ("ER", "PGR", "HER2", "KI67"):
        pos = [c.fractions[marker] for c in cases if c.status(marker)]
        neg = [c.fractions[marker] for c in cases if not c.status(marker)]
        assert min(pos) > 2 * max(neg), marker
        assert np.mean(pos) > 0.4
