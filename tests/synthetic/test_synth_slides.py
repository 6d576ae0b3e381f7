"""Slides open in OpenSlide as documented; transforms are true; IHC shows status strongly."""

from __future__ import annotations

import numpy as np
import openslide
import pandas as pd
import pytest
from _synth_helpers import dab_fraction, od_sum, read_level, tissue_centroid
from scipy.ndimage import map_coordinates

from cscl.io.manifest import load_manifest


@pytest.fixture(scope="module")
def cohort(cohort5):
    folder = cohort5.parent
    return (
        folder,
        load_manifest(str(cohort5)),
        pd.read_csv(folder / "labels.csv"),
        pd.read_csv(folder / "transforms.csv"),
    )


def test_files_and_columns(cohort):
    folder, man, labels, tf = cohort
    assert sorted(p.name for p in folder.iterdir()) == [
        "cohort.json", "labels.csv", "manifest.csv", "slides", "transforms.csv",
    ]  # fmt: skip
    raw = pd.read_csv(folder / "manifest.csv")
    assert list(raw.columns) == ["case_id", "stain", "slide_uri", "mpp"]
    assert raw["mpp"].isna().all()  # Aperio files carry their mpp
    assert raw["slide_uri"].str.match(r"^slides/case\d{3}_[A-Z0-9]+\.svs$").all()
    assert len(man) == 6 * 5 and (man.groupby("case_id").size() == 5).all()
    assert list(tf.columns) == [
        "case_id", "stain", "angle_deg", "tx", "ty",
        "m00", "m01", "m02", "m10", "m11", "m12",
    ]  # fmt: skip
    assert len(tf) == 6 * 4 and set(tf["stain"]) == {"HER2", "KI67", "ER", "PGR"}
    assert tf["angle_deg"].abs().max() > 1.0  # IHC sections really are moved


def test_openslide_reads_aperio_pyramids(cohort):
    _, man, _, _ = cohort
    for uri in man["slide_uri"]:
        s = openslide.OpenSlide(uri)
        assert s.properties["openslide.vendor"] == "aperio"
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(s.properties["openslide.objective-power"]) == pytest.approx(20)
        assert s.level_count >= 3
        assert s.dimensions == (1500, 1000)
        assert s.level_downsamples[1] == pytest.approx(2.0)
        tile = s.read_region((700, 500), 0, (64, 64))
        assert tile.size == (64, 64)


def test_transform_maps_tissue_centroid(cohort):
    folder, _, _, tf = cohort
    for row in tf.itertuples():
        he, ds = read_level(folder / f"slides/{row.case_id}_HE.svs", 2)
        ihc, ds2 = read_level(folder / f"slides/{row.case_id}_{row.stain}.svs", 2)
        M = np.array([[row.m00, row.m01, row.m02], [row.m10, row.m11, row.m12]])
        expected = M @ np.append(tissue_centroid(he, ds), 1.0)
        got = tissue_centroid(ihc, ds2)
        assert np.linalg.norm(got - expected) < 12, (row.case_id, row.stain, got, expected)
        # and the identity would be far off for a moved section
        if abs(row.angle_deg) > 3:
            assert np.linalg.norm(got - tissue_centroid(he, ds)) > 12


def _warp_ihc_to_he(folder, row, x0, y0, size):
    """IHC pixels at the H&E level-0 square (x0, y0, size) through the true transform."""
    M = np.array([[row.m00, row.m01, row.m02], [row.m10, row.m11, row.m12]])
    yy, xx = np.mgrid[y0 : y0 + size, x0 : x0 + size].astype(np.float64)
    ix = M[0, 0] * xx + M[0, 1] * yy + M[0, 2]
    iy = M[1, 0] * xx + M[1, 1] * yy + M[1, 2]
    bx, by = int(ix.min()) - 2, int(iy.min()) - 2
    w, h = int(ix.max()) - bx + 4, int(iy.max()) - by + 4
    s = openslide.OpenSlide(str(folder / f"slides/{row.case_id}_{row.stain}.svs"))
    region = od_sum(np.asarray(s.read_region((bx, by), 0, (w, h)).convert("RGB")))
    return map_coordinates(region, [iy - by, ix - bx], order=1)


def test_same_tissue_location_has_the_same_cells(cohort):
    """Location pairing works at the cell level: warped IHC nuclei coincide with H&E nuclei."""
    folder, _, _, tf = cohort
    row = tf[(tf["stain"] == "KI67")].iloc[0]
    he_lvl, ds = read_level(folder / f"slides/{row.case_id}_HE.svs", 2)
    dense = od_sum(he_lvl) > 0.6  # nuclei-rich pixels
    ys, xs = np.nonzero(dense)
    cx, cy = int(np.median(xs) * ds), int(np.median(ys) * ds)
    size = 200
    x0, y0 = cx - size // 2, cy - size // 2
    s = openslide.OpenSlide(str(folder / f"slides/{row.case_id}_HE.svs"))
    he = od_sum(np.asarray(s.read_region((x0, y0), 0, (size, size)).convert("RGB")))
    ihc = _warp_ihc_to_he(folder, row, x0, y0, size)
    r_true = np.corrcoef(he.ravel(), ihc.ravel())[0, 1]
    shifted = row.copy()
    shifted["m02"] += 14  # one cell (7 µm) off
    ihc_off = _warp_ihc_to_he(folder, shifted, x0, y0, size)
    r_off = np.corrcoef(he.ravel(), ihc_off.ravel())[0, 1]
    assert r_true > 0.5 and r_off < r_true - 0.3, (r_true, r_off)


def test_ihc_shows_status_strongly(cohort):
    folder, _, labels, _ = cohort
    col = {"HER2": "her2_status", "KI67": "ki67_status", "ER": "er_status", "PGR": "pgr_status"}
    for stain, c in col.items():
        pos_val = "high" if stain == "KI67" else "positive"
        fr = {
            r.case_id: dab_fraction(read_level(folder / f"slides/{r.case_id}_{stain}.svs", 1)[0])
            for r in labels.itertuples()
        }
        pos = [fr[k] for k in labels.loc[labels[c] == pos_val, "case_id"]]
        neg = [fr[k] for k in labels.loc[labels[c] != pos_val, "case_id"]]
        assert pos and neg, stain
        assert min(pos) > 2 * max(neg) and min(pos) > 0.25, (stain, pos, neg)
    # H&E carries no DAB at all
    for case in labels["case_id"]:
        assert dab_fraction(read_level(folder / f"slides/{case}_HE.svs", 1)[0]) < 0.02
