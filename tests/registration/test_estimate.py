"""Mask registration on constructed images: full-circle angles and slides of different mpp."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import ellipse

from cscl.registration.estimate import estimate_transform, rotation, translation, warp
from cscl.registration.io import apply_affine, compose_affine, invert_affine
from cscl.registration.overlay import warp_rgb
from cscl.registration.register import SlideThumb, register_thumbs


def _tissue(shape=(150, 200), seed=0):
    """An asymmetric multi-lobe tissue mask with a hole, and an RGB image with nuclei texture."""
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, bool)
    for cy, cx, ry, rx in [(70, 70, 40, 50), (90, 140, 30, 40), (40, 150, 18, 22)]:
        rr, cc = ellipse(cy, cx, ry, rx, shape=shape, rotation=rng.uniform(0, 3))
        m[rr, cc] = True
    m[65:75, 60:80] = False
    tex = ndimage.gaussian_filter(rng.random(shape), 1.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    rgb = np.full(shape + (3,), 243.0)
    purple = np.array([120.0, 60.0, 160.0])
    for c in range(3):
        rgb[..., c] = np.where(m, 243 - (243 - purple[c]) * (0.3 + 0.7 * tex), 243)
    return m, rgb.astype(np.uint8)


@pytest.mark.parametrize("angle", [0.0, 90.0, 178.0, -135.0])
def test_estimate_recovers_any_angle(angle):
    m, _ = _tissue()
    true = compose_affine(translation(25, -10), rotation(angle, (100, 75)))
    fixed = warp(m.astype(np.float32), true, (190, 230)) >= 0.5
    est = estimate_transform(m, fixed)
    pts = np.argwhere(m)[:, ::-1].astype(float)
    err = np.linalg.norm(apply_affine(est.matrix, pts) - apply_affine(true, pts), axis=1).mean()
    assert err < 0.5, (angle, est.angle_deg)
    assert est.dice > 0.98


def test_register_thumbs_handles_different_resolutions():
    """H&E at 0.5 µm/px read at 8 µm/px; IHC at 0.25 µm/px read at 6 µm/px: the level-0 matrix
    must include the 2× pixel-size factor and the rotation exactly."""
    m, rgb = _tissue(seed=1)
    he_to0 = np.array([[16.0, 0, 8.0], [0, 16.0, 8.0]])  # 8 µm/px thumb of a 0.5 mpp slide
    ihc_to0 = np.array([[24.0, 0, 12.0], [0, 24.0, 12.0]])  # 6 µm/px thumb of a 0.25 mpp slide
    a = np.deg2rad(-30)
    true = np.array(
        [[2 * np.cos(a), -2 * np.sin(a), 900.0], [2 * np.sin(a), 2 * np.cos(a), 2500.0]]
    )
    thumb = compose_affine(invert_affine(ihc_to0), compose_affine(true, he_to0))
    shape = (260, 330)
    ihc_rgb = warp_rgb(rgb, thumb, shape)
    ihc_mask = warp(m.astype(np.float32), thumb, shape) >= 0.5
    he = SlideThumb("he", m, rgb, he_to0, 0.5, 8.0)
    ihc = SlideThumb("ihc", ihc_mask, ihc_rgb, ihc_to0, 0.25, 6.0)
    reg = register_thumbs(he, ihc)
    assert reg.ok, reg.message
    pts = apply_affine(he_to0, np.argwhere(m)[:, ::-1].astype(float))
    err_um = np.linalg.norm(apply_affine(reg.matrix, pts) - apply_affine(true, pts), axis=1) * 0.25
    assert err_um.mean() < 8.0  # ≈ one thumbnail pixel at most
    assert reg.texture > 0.5


def test_empty_mask_is_an_error_not_a_guess():
    m, _ = _tissue()
    with pytest.raises(ValueError, match="no tissue"):
        estimate_transform(m, np.zeros_like(m))


def test_affine_refinement_recovers_shear_and_scale():
    """Tissue that shrank anisotropically (e.g. 4 % in y, a slight shear): the rigid fit leaves
    a residual, the affine option removes it."""
    m, _ = _tissue(seed=2)
    lin = np.array([[1.02, 0.03], [0.0, 0.96]]) @ rotation(25)[:, :2]
    true = np.hstack([lin, [[30.0], [10.0]]])
    fixed = warp(m.astype(np.float32), true, (200, 250)) >= 0.5
    pts = np.argwhere(m)[:, ::-1].astype(float)

    def err(mat):
        return np.linalg.norm(apply_affine(mat, pts) - apply_affine(true, pts), axis=1).mean()

    rigid = estimate_transform(m, fixed)
    aff = estimate_transform(m, fixed, affine=True)
    assert err(aff.matrix) < 0.6 < err(rigid.matrix)
    assert aff.dice >= rigid.dice


def test_registration_mask_keeps_pale_counterstain():
    """IHC tissue is mostly pale hematoxylin with some DAB: the whole section must be tissue
    (an Otsu split would keep only the brown part and the H&E/IHC masks would disagree)."""
    from cscl.registration.register import registration_mask

    rgb = np.full((120, 160, 3), 243, np.uint8)
    rgb[20:100, 30:130] = [228, 222, 235]  # pale counterstain, barely denser than glass
    rgb[40:70, 40:80] = [150, 110, 80]  # DAB-positive region
    mask = registration_mask(rgb, 8.0)
    assert mask[20:100, 30:130].mean() > 0.97
    assert mask.sum() < 1.05 * 80 * 100  # and not the glass
    assert registration_mask(np.full((50, 50, 3), 243, np.uint8), 8.0).sum() == 0


def test_mirrored_section_needs_allow_flip():
    m, _ = _tissue(seed=3)
    mirror = np.array([[-1.0, 0.0, 199.0], [0.0, 1.0, 0.0]])
    true = compose_affine(rotation(40, (100, 75)), mirror)
    fixed = warp(m.astype(np.float32), true, (180, 220)) >= 0.5
    proper = estimate_transform(m, fixed)
    flip = estimate_transform(m, fixed, allow_flip=True)
    assert flip.flipped and flip.dice > 0.98 > proper.dice
    assert np.linalg.det(flip.matrix[:, :2]) < 0
    pts = np.argwhere(m)[:, ::-1].astype(float)
    assert np.abs(apply_affine(flip.matrix, pts) - apply_affine(true, pts)).mean() < 0.5
