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

Speed without per-slide arrays (any slide size renders block by block): smooth fields are
evaluated on a coarse grid (every 16 px) and upsampled linearly, only where they are not
saturated; nuclei are evaluated per pixel against the one cell the pixel falls in (vectorised
gathers). With `scale` = s > 1 all of this runs on a grid s level-0 px apart (~1 µm/px) and is
upsampled per phase with slices; sensor noise (from a per-slide bank) is added at level 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cscl.synthetic.biology import CaseBiology
from cscl.synthetic.layout import (
    CELL_UM,
    MARKERS,
    S_MARKER,
    CaseLayout,
    cell_states,
    hash_uniform,
)
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

# hash streams per cell (0 and 8-11 are used by cell_states)
_S_JX, _S_JY, _S_R, _S_ASP, _S_ANG, _S_INT, _S_DAB = range(1, 8)


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
    scale: int = 1  # compute on a grid this many level-0 px apart, then upsample

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
        bank_rng = np.random.default_rng([*self.noise_seed, 1])
        self._bank = bank_rng.standard_normal((256 + 64, 1024 + 128), dtype=np.float32)

    # ---- geometry ---------------------------------------------------------------------------
    def to_um(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self._inv
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]

    # ---- cells ------------------------------------------------------------------------------
    def _cells(self, ci: np.ndarray, cj: np.ndarray) -> dict[str, np.ndarray]:
        """Per-cell nucleus geometry and stain amounts for cells (ci, cj) of the layout grid."""
        lay, bio, key = self.layout, self.bio, self.layout.key
        g = CELL_UM
        markers = MARKERS if self.stain == "HE" else (self.stain,)
        st = cell_states(lay, bio.fractions, ci, cj, markers)
        u0, v0, pos = st.u, st.v, st.positive
        is_tumour, is_lymph, is_fibro = st.tumour, st.lymph, st.fibro
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
        # geometry every stain shares (computed before the H&E cue, so centres never move):
        # jitter keeps a nucleus up to 15 % larger inside its cell
        rx_base = r * np.sqrt(aspect)
        rm = np.where(is_tumour, np.minimum(r + 2.3, g / 2 - 0.2), 0).astype(np.float32)
        jmax = np.maximum(g / 2 - np.maximum(1.15 * rx_base, rm) - 0.2, 0)

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
        jx = (2 * hash_uniform(ci, cj, key, _S_JX) - 1) * jmax
        jy = (2 * hash_uniform(ci, cj, key, _S_JY) - 1) * jmax
        big = np.float32(1e3)
        A = np.where(present, cs / rx, big)
        B = np.where(present, sn / rx, 0)
        C = np.where(present, -sn / ry, 0)
        D = np.where(present, cs / ry, big)

        dab = np.zeros_like(r)
        if self.stain in S_MARKER:
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
            hfac=np.where(dab > 0, 0.165, 0.55).astype(np.float32),  # DAB masks counterstain
        )

    # ---- blocks -----------------------------------------------------------------------------
    def _noise(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """A (h, w) slice of N(0, 1) noise at a random offset of a per-slide bank (fast)."""
        bank = self._bank
        if h > bank.shape[0] or w > bank.shape[1]:
            return rng.standard_normal((h, w), dtype=np.float32)
        oy = int(rng.integers(0, bank.shape[0] - h + 1))
        ox = int(rng.integers(0, bank.shape[1] - w + 1))
        return bank[oy : oy + h, ox : ox + w]

    def render(self, x0: int, y0: int, w: int, h: int, out: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 (h, w, 3) of the slide rectangle at level-0 (x0, y0), into `out` if given.

        With `scale` > 1 the tissue is computed on a grid `scale` times coarser and linearly
        upsampled (nuclei stay several pixels wide at 1 µm/px); sensor noise is added at level 0.
        """
        m = int(math.ceil(3 * self.blur)) if self.blur > 0 else 0
        rng = np.random.default_rng([*self.noise_seed, x0, y0])
        X0, Y0, W, H = x0 - m, y0 - m, w + 2 * m, h + 2 * m
        s = self.scale
        c = (s - 1) / 2.0  # level-0 offset of a coarse pixel's centre
        lx0 = math.floor((X0 - c) / s)
        ly0 = math.floor((Y0 - c) / s)
        if s == 1:
            wl, hl = W, H
        else:  # one more coarse pixel past the end, for interpolation
            wl = math.floor((X0 + W - 1 - c) / s) + 2 - lx0
            hl = math.floor((Y0 + H - 1 - c) / s) + 2 - ly0
        od = self._render_od(lx0 * s + c, ly0 * s + c, float(s), wl, hl, rng)
        if od is None:
            rgb = np.empty((3, H, W), np.float32)
            rgb[:] = (255.0 * np.exp(-_LN10 * GLASS_OD) + 0.5).astype(np.float32)[:, None, None]
        else:
            od *= np.float32(-_LN10)
            rgb = np.exp(od, out=od)
            rgb *= np.float32(255.0)
            rgb += np.float32(0.5)  # rounding offset for the final cast
            if s > 1:
                rgb = _upsample(rgb, (Y0 - c) / s - ly0, H, s, axis=1)
                rgb = _upsample(rgb, (X0 - c) / s - lx0, W, s, axis=2)
        if m:
            from scipy.ndimage import gaussian_filter

            rgb = gaussian_filter(rgb, sigma=(0, self.blur, self.blur), mode="nearest")
            rgb = rgb[:, m : m + h, m : m + w]
        sig = np.float32(self.noise_sigma)
        for k in range(3):
            rgb[k] += self._noise(rng, h, w) * sig
        np.clip(rgb, 0, 255, out=rgb)
        if out is None:
            out = np.empty((h, w, 3), np.uint8)
        np.copyto(out, rgb.transpose(1, 2, 0), casting="unsafe")
        return out

    def _render_od(self, xs0: float, ys0: float, step: float, w: int, h: int, rng):
        """Optical densities (3, h, w) of pixels at level-0 (xs0 + i·step, ys0 + j·step);
        None when the whole rectangle is glass."""
        lay = self.layout
        f32 = np.float32
        # smooth fields on a coarse grid, upsampled only where they are not saturated
        nx, ny = w // COARSE_PX + 2, h // COARSE_PX + 2
        X, Y = np.meshgrid(
            xs0 + np.arange(nx, dtype=np.float64) * COARSE_PX * step,
            ys0 + np.arange(ny, dtype=np.float64) * COARSE_PX * step,
        )
        U, V = self.to_um(X, Y)
        env_c = lay.envelope(U, V)
        if env_c.max() < -0.02:
            return None  # glass only
        up = _Upsampler(w, h, nx, ny)
        mt = f32(1.0) if env_c.min() > 0.02 else _soft(up(env_c), 250.0)
        tum_c = lay.tumour_score(U, V)
        if tum_c.max() < -0.1:
            mu = f32(0.0)
        else:
            mu = mt * (f32(1.0) if tum_c.min() > 0.1 else _soft(up(tum_c), 33.0))

        # pixel -> layout µm, and the index of the grid cell each pixel falls in
        inv = self._inv
        xs = xs0 + np.arange(w, dtype=np.float64) * step
        ys = ys0 + np.arange(h, dtype=np.float64) * step
        u = (inv[0, 0] * xs + inv[0, 2]).astype(f32)[None, :] + (inv[0, 1] * ys).astype(f32)[
            :, None
        ]
        v = (inv[1, 0] * xs + inv[1, 2]).astype(f32)[None, :] + (inv[1, 1] * ys).astype(f32)[
            :, None
        ]
        cu, cv = self.to_um(
            np.array([xs[0], xs[-1], xs[0], xs[-1]]), np.array([ys[0], ys[0], ys[-1], ys[-1]])
        )
        ig = 1.0 / CELL_UM
        ci0, ci1 = int(math.floor(cu.min() * ig)) - 1, int(math.floor(cu.max() * ig)) + 1
        cj0, cj1 = int(math.floor(cv.min() * ig)) - 1, int(math.floor(cv.max() * ig)) + 1
        ncx = ci1 - ci0 + 1
        cj_grid, ci_grid = np.mgrid[cj0 : cj1 + 1, ci0 : ci1 + 1]
        cells = self._cells(ci_grid.ravel(), cj_grid.ravel())
        fj = np.floor(v * f32(ig))
        fi = np.mod(fj, f32(2))
        fi *= f32(-0.5 * CELL_UM)
        fi += u
        fi *= f32(ig)
        np.floor(fi, out=fi)
        fj -= f32(cj0)
        fj *= f32(ncx)
        fj += fi
        fj -= f32(ci0)
        idx = fj.astype(np.intp)
        del fi, fj

        # nucleus of the pixel's cell: elliptic profile, chromatin texture
        u -= np.take(cells["cx"], idx)
        v -= np.take(cells["cy"], idx)
        dx, dy = u, v
        ex = dx * np.take(cells["A"], idx)
        ex += dy * np.take(cells["B"], idx)
        ey = dx * np.take(cells["C"], idx)
        ey += dy * np.take(cells["D"], idx)
        ex *= ex
        ey *= ey
        ex += ey
        nuc = np.subtract(f32(1.0), ex, out=ex)
        np.maximum(nuc, 0, out=nuc)
        np.sqrt(nuc, out=nuc)
        del ey
        tex = self._noise(rng, h, w) * f32(0.12) + f32(1.0)
        nuc_h = nuc * np.take(cells["h"], idx)
        nuc_h *= tex

        if self.stain in ("HE", "HER2"):
            re = dx * dx
            re += dy * dy
            np.sqrt(re, out=re)
            rm = np.take(cells["rm"], idx)
            cyto = rm - re
            cyto *= f32(1 / 0.6)
            cyto += f32(0.5)
            np.clip(cyto, 0, 1, out=cyto)  # tumour cells only: rm = 0 elsewhere
        fib = self._noise(rng, h, w) * f32(0.09) + f32(1.0)

        if self.stain == "HE":
            hem = nuc_h
            hem += mt * f32(0.025)
            eos = up(f32(0.22) + f32(0.05) * lay.eosin_var(U, V))
            eos *= fib
            eos *= mt * f32(1.0) - mu * f32(0.35)
            eos += cyto * np.take(cells["cyto"], idx)
            nuc *= f32(-0.5)
            nuc += f32(1.0)
            eos *= nuc
            dab = None
        else:
            dcell = np.take(cells["dab"], idx)
            if self.stain == "HER2":
                ring = re - rm
                ring *= f32(1 / 0.55)
                ring *= ring
                np.negative(ring, out=ring)
                np.exp(ring, out=ring)
                ring += cyto * f32(0.12)
                dab = dcell * ring
                hem = nuc_h * f32(0.55)
            else:
                dab = dcell * nuc
                dab *= tex
                hem = nuc_h * np.take(cells["hfac"], idx)
            hem += fib * (mt * f32(0.10))  # counterstained stroma: visibly tinted tissue
            dab += mt * f32(0.02)
            eos = mt * f32(0.01)
        od = np.empty((3, h, w), f32)
        vh, ve, vd = self._vecs
        for k in range(3):
            ch = od[k]
            np.multiply(hem, vh[k], out=ch)
            ch += eos * ve[k]
            if dab is not None:
                ch += dab * vd[k]
            ch += f32(GLASS_OD[k])
        return od


def _upsample(a: np.ndarray, start: float, n: int, s: int, axis: int) -> np.ndarray:
    """Linear upsampling by the integer factor `s` along `axis`: output k samples `a` at the
    fractional index start + k / s. Done per phase k mod s with slices (no gathers)."""
    shape = list(a.shape)
    shape[axis] = n
    out = np.empty(shape, np.float32)
    for p in range(min(s, n)):
        cnt = len(range(p, n, s))
        pos = start + p / s
        i0 = math.floor(pos)
        f = np.float32(pos - i0)
        lo = [slice(None)] * a.ndim
        hi = [slice(None)] * a.ndim
        dst = [slice(None)] * a.ndim
        lo[axis] = slice(i0, i0 + cnt)
        hi[axis] = slice(i0 + 1, i0 + 1 + cnt)
        dst[axis] = slice(p, n, s)
        o = out[tuple(dst)]
        np.multiply(a[tuple(lo)], np.float32(1) - f, out=o)
        o += a[tuple(hi)] * f
    return out


def _soft(x: np.ndarray, slope: float) -> np.ndarray:
    """clip(x * slope + 0.5, 0, 1) in place: a soft indicator of x > 0."""
    x *= np.float32(slope)
    x += np.float32(0.5)
    return np.clip(x, 0, 1, out=x)


class _Upsampler:
    """Linear interpolation from coarse samples every COARSE_PX px to a (h, w) block, as
    two-tap gathers along y then x (no BLAS: workers stay single-threaded)."""

    def __init__(self, w: int, h: int, nx: int, ny: int):
        self.y = _taps(h, ny)
        self.x = _taps(w, nx)

    def __call__(self, f: np.ndarray) -> np.ndarray:
        i0, w0, w1 = self.y
        f = f.astype(np.float32)
        F = np.take(f, i0, axis=0) * w0[:, None]
        F += np.take(f, i0 + 1, axis=0) * w1[:, None]
        i0, w0, w1 = self.x
        out = np.take(F, i0, axis=1)
        out *= w0
        out += np.take(F, i0 + 1, axis=1) * w1
        return out


def _taps(n: int, n_coarse: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.arange(n, dtype=np.float64) / COARSE_PX
    i0 = np.clip(np.floor(pos).astype(np.intp), 0, n_coarse - 2)
    f = (pos - i0).astype(np.float32)
    return i0, 1 - f, f
