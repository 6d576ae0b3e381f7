"""Render any rectangle of a synthetic slide (H&E or IHC) from the case layout.

Colour follows Beer–Lambert: each stain contributes optical density OD = c · v (v = stain vector,
Ruifrok & Johnston H&E and H-DAB), pixels are 255 · 10^-(ΣOD). What each stain shows:
- H&E: hematoxylin in every nucleus, eosin in stroma and tumour cytoplasm. The status of a cell
  shows only WEAKLY and only in the cells that are positive (scaled by `he_cue`):
  KI67+ nuclei are ~10 % larger and ~12 % darker, ER+ nuclei rounder and ~5 % smaller,
  PGR+ nuclei ~7 % darker, HER2+ cells carry ~0.08 OD more eosin in their cytoplasm.
- IHC: pale hematoxylin counterstain of every nucleus; DAB in positive tumour nuclei (ER, PGR,
  KI67) or on the membrane ring of positive tumour cells (HER2).
Whether a tumour cell is positive is decided once per cell (hash uniform < spatial positivity
field), so H&E and IHC agree cell by cell at the same tissue location.

Smooth fields are evaluated on a coarse grid (every 16 px) and upsampled by separable linear
interpolation (two small matrix products); nuclei are evaluated per pixel in the cell of the
pixel only, all vectorised — no per-slide arrays, so any slide size renders block by block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cscl.synthetic.biology import CaseBiology
from cscl.synthetic.layout import CELL_UM, CaseLayout, hash_uniform
from cscl.synthetic.shift import ShiftSpec


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# Ruifrok & Johnston (2001) stain vectors (RGB optical density directions).
STAIN_H = _unit([0.650, 0.704, 0.286])
STAIN_E = _unit([0.072, 0.990, 0.105])
STAIN_DAB = _unit([0.268, 0.570, 0.776])
GLASS_OD = np.array([0.022, 0.022, 0.016])
NUCLEAR_MARKERS = ("ER", "PGR", "KI67")
COARSE_PX = 16
_LN10 = math.log(10.0)

# hash streams per cell
_S_OCC, _S_JX, _S_JY, _S_R, _S_ASP, _S_ANG, _S_INT, _S_DAB = range(8)
_S_MARKER = {"ER": 8, "PGR": 9, "HER2": 10, "KI67": 11}


@dataclass
class SlideRenderer:
    """Everything needed to render one slide; picklable, cheap to build in a worker."""

    layout: CaseLayout
    bio: CaseBiology
    stain: str
    mpp: float
    matrix: np.ndarray  # 2x3: H&E level-0 px -> this slide level-0 px (same mpp)
    noise_seed: tuple[int, ...]
    shift: ShiftSpec = field(default_factory=ShiftSpec)
    cohort_seed: int = 0
    he_cue: float = 1.0
    stain_jitter: np.ndarray = field(default_factory=lambda: np.ones(3))

    def __post_init__(self) -> None:
        A = np.asarray(self.matrix, dtype=np.float64)
        R, t = A[:, :2], A[:, 2]
        Ri = np.linalg.inv(R)
        # slide px -> layout µm
        self._inv = np.hstack([Ri, (-Ri @ t)[:, None]]) * self.mpp
        vecs = np.stack([STAIN_H, STAIN_E, STAIN_DAB])
        scale = np.asarray(self.stain_jitter, dtype=np.float64)
        if self.shift.stain:
            direction, s_scale = self.shift.stain_perturbation(self.cohort_seed)
            vecs = vecs + direction
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            scale = scale * s_scale
        self._vecs = (vecs * scale[:, None]).astype(np.float32)  # rows: H, E, DAB
        self.noise_sigma = self.shift.noise_sigma()
        self.blur = self.shift.blur_sigma_px()

    # ---- geometry ---------------------------------------------------------------------------
    def to_um(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self._inv
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]

    # ---- cells ------------------------------------------------------------------------------
    def _cells(self, ci: np.ndarray, cj: np.ndarray) -> dict[str, np.ndarray]:
        """Per-cell nucleus geometry and stain amounts for cells (ci, cj) of the layout grid."""
        lay, bio, key = self.layout, self.bio, self.layout.key
        g = CELL_UM
        u0 = ((ci + 0.5) * g).astype(np.float32)
        v0 = ((cj + 0.5) * g).astype(np.float32)
        env = lay.envelope(u0, v0)
        in_tissue = env > 0
        tum = in_tissue & (lay.tumour_score(u0, v0) > 0)
        occ = hash_uniform(ci, cj, key, _S_OCC)
        is_tumour = tum & (occ < 0.92)
        is_lymph = in_tissue & ~tum & (occ < lay.lymph_occupancy)
        is_fibro = in_tissue & ~tum & ~is_lymph & (occ < lay.lymph_occupancy + lay.stroma_occupancy)
        present = is_tumour | is_lymph | is_fibro

        ur = hash_uniform(ci, cj, key, _S_R)
        ua = hash_uniform(ci, cj, key, _S_ASP)
        ui = hash_uniform(ci, cj, key, _S_INT)
        r = np.where(
            is_tumour,
            3.5 * (0.85 + 0.35 * ur) * bio.nuc_scale,
            np.where(is_lymph, 2.3 * (0.9 + 0.2 * ur), 1.9 * (0.9 + 0.2 * ur)),
        ).astype(np.float32)
        aspect = np.where(
            is_tumour, 1.0 + 0.35 * ua, np.where(is_lymph, 1.0 + 0.08 * ua, 2.6 + 0.9 * ua)
        ).astype(np.float32)
        h_od = np.where(is_tumour, 0.72 * (0.85 + 0.3 * ui), np.where(is_lymph, 0.95, 0.7)).astype(
            np.float32
        )
        h_od = h_od * np.float32(bio.h_scale)
        cyto_e = np.where(is_tumour, 0.16, 0.0).astype(np.float32)

        pos = {}
        for m in ("ER", "PGR", "HER2", "KI67"):
            p = lay.positivity(m, u0, v0, bio.fractions[m])
            pos[m] = is_tumour & (hash_uniform(ci, cj, key, _S_MARKER[m]) < p)

        if self.stain == "HE":  # the weak H&E cue, in exactly the positive cells
            c = np.float32(self.he_cue)
            r = r * np.where(pos["KI67"], 1 + 0.10 * c, 1) * np.where(pos["ER"], 1 - 0.05 * c, 1)
            h_od = h_od * np.where(pos["KI67"], 1 + 0.12 * c, 1)
            h_od = h_od * np.where(pos["PGR"], 1 + 0.07 * c, 1)
            aspect = np.where(pos["ER"], 1 + (aspect - 1) * (1 - 0.6 * c), aspect)
            cyto_e = cyto_e + np.where(pos["HER2"], 0.08 * c, 0).astype(np.float32)
        r = r.astype(np.float32)
        aspect = aspect.astype(np.float32)

        rx = r * np.sqrt(aspect)
        ry = r / np.sqrt(aspect)
        ang = hash_uniform(ci, cj, key, _S_ANG) * np.float32(np.pi)
        cs, sn = np.cos(ang), np.sin(ang)
        rm = np.minimum(r + 2.3, g / 2 - 0.2).astype(np.float32)  # membrane radius
        jmax = np.maximum(g / 2 - np.maximum(rx, rm) - 0.2, 0)
        jx = (2 * hash_uniform(ci, cj, key, _S_JX) - 1) * jmax
        jy = (2 * hash_uniform(ci, cj, key, _S_JY) - 1) * jmax
        big = np.float32(1e3)
        A = np.where(present, cs / rx, big)
        B = np.where(present, sn / rx, 0)
        C = np.where(present, -sn / ry, 0)
        D = np.where(present, cs / ry, big)

        dab = np.zeros_like(r)
        if self.stain in _S_MARKER:
            level = 0.55 + 0.7 * hash_uniform(ci, cj, key, _S_DAB)
            dab = np.where(pos[self.stain], level, 0).astype(np.float32)
        return dict(
            cx=(u0 + jx).astype(np.float32),
            cy=(v0 + jy).astype(np.float32),
            A=A.astype(np.float32),
            B=B.astype(np.float32),
            C=C.astype(np.float32),
            D=D.astype(np.float32),
            h=np.where(present, h_od, 0).astype(np.float32),
            cyto=cyto_e,
            rm=rm,
            dab=dab,
            tumour=is_tumour,
        )

    # ---- blocks -----------------------------------------------------------------------------
    def render(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of the slide rectangle at level-0 (x0, y0)."""
        m = int(math.ceil(3 * self.blur)) if self.blur > 0 else 0
        rng = np.random.default_rng([*self.noise_seed, x0, y0])
        od = self._render_od(x0 - m, y0 - m, w + 2 * m, h + 2 * m, rng)
        if od is None:
            rgb = np.empty((h + 2 * m, w + 2 * m, 3), np.float32)
            rgb[:] = (255.0 * np.exp(-_LN10 * GLASS_OD)).astype(np.float32)
        else:
            rgb = 255.0 * np.exp(-_LN10 * od)
        if m:
            from scipy.ndimage import gaussian_filter

            rgb = gaussian_filter(rgb, sigma=(self.blur, self.blur, 0), mode="nearest")
            rgb = rgb[m : m + h, m : m + w]
        rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(self.noise_sigma)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)

    def _coarse(self, x0: int, y0: int, w: int, h: int):
        """Smooth fields on a coarse grid and the interpolation matrices to full resolution."""
        nx = w // COARSE_PX + 2
        ny = h // COARSE_PX + 2
        xs = x0 + np.arange(nx, dtype=np.float64) * COARSE_PX
        ys = y0 + np.arange(ny, dtype=np.float64) * COARSE_PX
        X, Y = np.meshgrid(xs, ys)
        U, V = self.to_um(X, Y)
        env = self.layout.envelope(U, V)
        return env, U, V, _interp_matrix(w, nx), _interp_matrix(h, ny)

    def _render_od(self, x0: int, y0: int, w: int, h: int, rng: np.random.Generator):
        lay = self.layout
        env_c, U, V, Mx, My = self._coarse(x0, y0, w, h)
        if env_c.max() < -0.02:
            return None  # glass only
        tum_c = lay.tumour_score(U, V)
        evar_c = lay.eosin_var(U, V)

        def up(f: np.ndarray) -> np.ndarray:
            return My @ f.astype(np.float32) @ Mx.T

        env = up(env_c)
        mt = np.clip(env / 0.004 + 0.5, 0, 1)
        mu = np.clip(up(tum_c) / 0.03 + 0.5, 0, 1) * mt
        evar = up(evar_c)

        # pixel -> µm
        inv = self._inv.astype(np.float64)
        xs = np.arange(x0, x0 + w, dtype=np.float64)
        ys = np.arange(y0, y0 + h, dtype=np.float64)
        u = ((inv[0, 0] * xs + inv[0, 2])[None, :] + (inv[0, 1] * ys)[:, None]).astype(np.float32)
        v = ((inv[1, 0] * xs + inv[1, 2])[None, :] + (inv[1, 1] * ys)[:, None]).astype(np.float32)
        g = np.float32(CELL_UM)
        ci_px = np.floor(u / g).astype(np.int64)
        cj_px = np.floor(v / g).astype(np.int64)
        ci0, ci1 = int(ci_px.min()), int(ci_px.max())
        cj0, cj1 = int(cj_px.min()), int(cj_px.max())
        ncx = ci1 - ci0 + 1
        cj_grid, ci_grid = np.mgrid[cj0 : cj1 + 1, ci0 : ci1 + 1]
        cells = self._cells(ci_grid.ravel(), cj_grid.ravel())
        idx = ((cj_px - cj0) * ncx + (ci_px - ci0)).astype(np.int32)
        del ci_px, cj_px

        dx = u - cells["cx"][idx]
        dy = v - cells["cy"][idx]
        del u, v
        ex = dx * cells["A"][idx] + dy * cells["B"][idx]
        ey = dx * cells["C"][idx] + dy * cells["D"][idx]
        nuc = np.sqrt(np.clip(1.0 - (ex * ex + ey * ey), 0, 1))
        del ex, ey
        tex = np.float32(0.8) + np.float32(0.4) * rng.random((h, w), dtype=np.float32)
        nuc_h = nuc * cells["h"][idx] * tex
        re = np.sqrt(dx * dx + dy * dy)
        del dx, dy
        rm = cells["rm"][idx]
        is_tum = cells["tumour"][idx]
        cyto = np.clip((rm - re) / 0.6 + 0.5, 0, 1) * is_tum

        od = np.empty((h, w, 3), np.float32)
        vh, ve, vd = self._vecs
        fib = np.float32(0.85) + np.float32(0.3) * rng.random((h, w), dtype=np.float32)
        if self.stain == "HE":
            hem = mt * 0.05 + nuc_h
            eos = mt * (0.30 + 0.06 * evar) * (1 - 0.35 * mu) * fib
            eos = eos + cyto * cells["cyto"][idx]
            eos *= 1 - 0.5 * nuc
            dab = None
        else:
            dcell = cells["dab"][idx]
            if self.stain == "HER2":
                ring = np.exp(-(((re - rm) / np.float32(0.55)) ** 2)) * is_tum
                dab = dcell * (ring + 0.12 * cyto)
                hem = mt * 0.03 + 0.55 * nuc_h
            else:
                dab = dcell * nuc * tex
                hem = mt * 0.03 + 0.55 * nuc_h * (1 - 0.7 * (dcell > 0))
            dab = dab + mt * 0.015
            eos = mt * 0.035 * fib
        for k in range(3):
            ch = hem * vh[k] + eos * ve[k] + np.float32(GLASS_OD[k])
            if dab is not None:
                ch += dab * vd[k]
            od[..., k] = ch
        return od


def _interp_matrix(n: int, n_coarse: int) -> np.ndarray:
    """(n, n_coarse) linear interpolation from coarse samples every COARSE_PX to n pixels."""
    pos = np.arange(n, dtype=np.float64) / COARSE_PX
    i0 = np.clip(np.floor(pos).astype(int), 0, n_coarse - 2)
    f = pos - i0
    M = np.zeros((n, n_coarse), np.float32)
    M[np.arange(n), i0] = 1 - f
    M[np.arange(n), i0 + 1] = f
    return M
