"""Registration on a REAL serial-section pair with expert landmarks (ANHIR rat kidney, 5 % scale).

The pair lives in ../shared/data/real/pairs/rat-kidney (never committed); the tests skip with a
clear message without it. The JPEGs are written as tiny pyramidal TIFFs so `cscl register` runs
on them exactly as on slides; 5 µm/px is assumed for the 5 % scale (the rTRE, relative to the
image diagonal, does not depend on it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cscl.cli import main
from cscl.registration import load_registrations, pair_by_location, transform_of
from cscl.registration.quality import read_landmarks, rtre
from cscl.registration.register import read_thumb, register_thumbs, thumb_from_rgb
from cscl.wsi.tissue import TissueParams, segment_rgb

REAL = Path(os.environ.get("CSCL_REAL_DATA", Path(__file__).parents[2] / "../shared/data/real"))
PAIR = REAL / "pairs" / "rat-kidney"
HE_NAME, IHC_NAME = "Rat-Kidney_HE", "Rat-Kidney_PanCytokeratin"
MPP = 5.0  # assumed µm/px of the 5 % scale JPEGs
TARGET_RTRE = 0.005  # issue 9: median rTRE ≤ 0.005 (ANHIR 2019 leaders ≈ 0.002–0.003)

pytestmark = pytest.mark.skipif(
    not (PAIR / f"{HE_NAME}.jpg").exists(),
    reason=f"real rat-kidney pair not found at {PAIR} (set CSCL_REAL_DATA to the real-data folder)",
)


def _rgb(name: str) -> np.ndarray:
    with Image.open(PAIR / f"{name}.jpg") as im:
        return np.asarray(im.convert("RGB"))


def _as_slide(rgb: np.ndarray, path: Path) -> Path:
    from cscl.synthetic.tiff_writer import write_pyramid

    h, w = rgb.shape[:2]
    pad = np.full((h + 1024, w + 1024, 3), 255, np.uint8)
    pad[:h, :w] = rgb
    write_pyramid(path, w, h, lambda x, y, tw, th: pad[y : y + th, x : x + tw], mpp=MPP)
    return path


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """`cscl register` on the real pair (landmarks from the manifest): (table, out folder)."""
    root = tmp_path_factory.mktemp("real_pair")
    rows = []
    for stain, name in (("HE", HE_NAME), ("PANCK", IHC_NAME)):
        _as_slide(_rgb(name), root / f"{name}.tiff")
        rows.append(
            {
                "case_id": "rat-kidney",
                "stain": stain,
                "slide_uri": f"{name}.tiff",
                "slide_id": name,
                "landmarks_uri": str(PAIR / f"{name}.csv"),
            }
        )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    out = root / "reg"
    rc = main(["register", "--manifest", str(root / "manifest.csv"), "--out", str(out)])
    assert rc == 0
    return load_registrations(out / "registration.csv"), out


def test_real_pair_rtre_improves_below_target_and_is_not_flagged(real_run, capsys):
    df, out = real_run
    r = df.iloc[0]
    print(
        f"rat kidney rTRE median {r.rtre_before_median:.4f} → {r.rtre_median:.4f}, "
        f"max {r.rtre_before_max:.4f} → {r.rtre_max:.4f}; texture {r.texture:.2f}, "
        f"overlap {r.score:.3f}"
    )
    assert r.n_landmarks >= 60
    assert r.rtre_median < r.rtre_before_median and r.rtre_max < r.rtre_before_max
    assert r.rtre_median <= TARGET_RTRE
    assert bool(r.ok), r.message  # a well-aligned real pair is not flagged (mirror check too)
    assert r.field_uri and Path(r.field_uri).exists()  # the non-rigid refinement was kept
    meta = json.loads((out / "registration.json").read_text())
    assert meta["pairs"]["rat-kidney_PANCK"]["nonrigid_kept"] is True


def test_location_pairing_uses_the_refined_map(real_run):
    """Patch centres paired through the registration row land where the expert says."""
    df, _ = real_run
    row = df.iloc[0]
    he_pts = read_landmarks(PAIR / f"{HE_NAME}.csv")
    ihc_pts = read_landmarks(PAIR / f"{IHC_NAME}.csv")
    n = min(len(he_pts), len(ihc_pts))
    he_pts, ihc_pts = he_pts[:n], ihc_pts[:n]
    t = transform_of(row)
    assert t.field is not None
    # treat landmarks as patch centres: pairing through the full map finds each one's partner
    tol = 0.01 * np.hypot(*_rgb(IHC_NAME).shape[:2])
    he_idx, ihc_idx = pair_by_location(he_pts, ihc_pts, t, max_dist=tol)
    right = (he_idx == ihc_idx).sum()
    he_a, ihc_a = pair_by_location(he_pts, ihc_pts, t.matrix, max_dist=tol)
    assert right >= 0.8 * n and right > (he_a == ihc_a).sum()


def test_affine_never_worse_than_rigid_on_the_real_pair():
    he = thumb_from_rgb(_rgb(HE_NAME), MPP, thumb_mpp=8.0)
    ihc = thumb_from_rgb(_rgb(IHC_NAME), MPP, thumb_mpp=8.0)
    he_pts = read_landmarks(PAIR / f"{HE_NAME}.csv")
    ihc_pts = read_landmarks(PAIR / f"{IHC_NAME}.csv")
    size = ihc.size0
    rigid = register_thumbs(he, ihc, nonrigid=False)
    aff = register_thumbs(he, ihc, affine=True, nonrigid=False)
    r_rigid, r_aff = (
        rtre(rigid.matrix, he_pts, ihc_pts, size),
        rtre(aff.matrix, he_pts, ihc_pts, size),
    )
    ident = rtre(np.eye(2, 3), he_pts, ihc_pts, size)
    print(f"rigid {r_rigid}, affine {r_aff}, identity {ident}; affine steps {aff.steps}")
    assert r_rigid[0] < ident[0] and r_aff[0] <= r_rigid[0] * 1.05
    assert aff.ok and rigid.ok


@pytest.mark.parametrize("other", ["cmu_he", "synthetic_ihc"])
def test_a_wrong_pair_is_flagged(other, tmp_path):
    """Another case's / another tissue's slide against the real H&E must be flagged."""
    he = thumb_from_rgb(_rgb(HE_NAME), MPP, thumb_mpp=8.0)
    if other == "cmu_he":
        cmu = REAL / "slides" / "cmu-1-small-region.svs"
        if not cmu.exists():
            pytest.skip(f"{cmu} not found")
        wrong = read_thumb(str(cmu), None, 8.0)
    else:
        from cscl.synthetic.testing import tiny_cohort

        man = tiny_cohort(tmp_path, n_cases=1, seed=3)
        m = pd.read_csv(man)
        uri = m.loc[m["stain"] == "HER2", "slide_uri"].iloc[0]
        wrong = read_thumb(str(man.parent / uri), None, 8.0)
    reg = register_thumbs(he, wrong)
    print(f"{other}: overlap {reg.score:.3f}, texture {reg.texture:.2f}: {reg.message}")
    assert not reg.ok and "texture" in reg.message
    assert reg.field is None  # a wrong slide is not warped into a "match"


@pytest.mark.parametrize("mirror", ["left-right", "up-down"])
def test_a_mirrored_section_is_flagged(mirror):
    """The real IHC section mounted face down: its outline fits the H&E almost as well (overlap
    0.91, texture 0.58 ≥ the 0.4 bar) but the map is wrong (rTRE ~0.19); the mirror check flags
    it, and with --allow-flip the mirrored fit is found and is right."""
    he = thumb_from_rgb(_rgb(HE_NAME), MPP, thumb_mpp=8.0)
    ihc_rgb = _rgb(IHC_NAME)
    flipped = ihc_rgb[:, ::-1] if mirror == "left-right" else ihc_rgb[::-1]
    ihc = thumb_from_rgb(np.ascontiguousarray(flipped), MPP, thumb_mpp=8.0)
    he_pts = read_landmarks(PAIR / f"{HE_NAME}.csv")
    ihc_pts = read_landmarks(PAIR / f"{IHC_NAME}.csv")
    h, w = ihc_rgb.shape[:2]
    if mirror == "left-right":
        ihc_pts[:, 0] = w - 1 - ihc_pts[:, 0]
    else:
        ihc_pts[:, 1] = h - 1 - ihc_pts[:, 1]
    reg = register_thumbs(he, ihc, nonrigid=False)
    print(f"{mirror}: {reg.message}; rTRE {rtre(reg.matrix, he_pts, ihc_pts, ihc.size0)}")
    assert not reg.ok and "looks mirrored" in reg.message and "--allow-flip" in reg.message
    assert rtre(reg.matrix, he_pts, ihc_pts, ihc.size0)[0] > 0.05  # the flagged map IS wrong
    fixed = register_thumbs(he, ihc, allow_flip=True, nonrigid=False)
    assert fixed.ok and rtre(fixed.matrix, he_pts, ihc_pts, ihc.size0)[0] < 0.03


def test_tissue_mask_covers_the_sparse_and_pale_tissue():
    """All-but-a-few expert landmarks (placed on tissue) fall inside `segment_rgb`'s mask."""
    for name, need in ((HE_NAME, 0.95), (IHC_NAME, 0.85)):
        mask, _, _ = segment_rgb(_rgb(name), MPP, TissueParams())
        pts = read_landmarks(PAIR / f"{name}.csv").round().astype(int)
        inside = mask[pts[:, 1], pts[:, 0]].mean()
        print(f"{name}: mask covers {mask.mean():.2f} of the image, {inside:.2f} of landmarks")
        assert inside >= need
        assert 0.5 < mask.mean() < 0.8  # the section, not the glass
