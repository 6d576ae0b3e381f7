"""Tissue layout of one synthetic case, defined procedurally in micrometres.

Everything here is a pure function of a few seeds, so any worker can evaluate any part of the
tissue without holding a slide in memory: smooth fields are random Fourier features (evaluable
anywhere), nuclei sit on a jittered grid whose per-cell attributes come from an integer hash of
the cell index. The H&E slide and every IHC slide of a case sample the SAME layout through their
own rigid transform, so a tissue location carries the same cells in every stain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

# Cell grid pitch (µm): one potential nucleus per cell, fully inside it (jitter + radius < pitch/2)
# so a pixel only ever needs the nucleus of its own cell.
CELL_UM = 14.0
MARKERS = ("ER", "PGR", "HER2", "KI67")
S_OCC = 0  # hash stream of cell occupancy / type
S_MARKER = {"ER": 8, "PGR": 9, "HER2": 10, "KI67": 11}  # hash streams of marker positivity

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_F1 = np.uint64(0xBF58476D1CE4E5B9)
_F2 = np.uint64(0x94D049BB133111EB)


def hash_uniform(ci: np.ndarray, cj: np.ndarray, key: int, stream: int) -> np.ndarray:
    """Uniform [0, 1) per cell from (cell index, case key, stream): splitmix64 of a mixed word.

    Stateless, so tiles rendered in any order or process agree on every cell.
    """
    with np.errstate(over="ignore"):
        x = (np.asarray(ci, dtype=np.int64).astype(np.uint64) * _M1) ^ (
            np.asarray(cj, dtype=np.int64).astype(np.uint64) * _M2
        )
        x ^= np.uint64((key * 1_000_003 + stream * 7_919) & 0xFFFFFFFFFFFFFFFF) * _M3
        x ^= x >> np.uint64(30)
        x *= _F1
        x ^= x >> np.uint64(27)
        x *= _F2
        x ^= x >> np.uint64(31)
    return ((x >> np.uint64(40)).astype(np.float64) / float(1 << 24)).astype(np.float32)


@dataclass(frozen=True)
class SmoothField:
    """Stationary Gaussian-like random field (unit variance, length scale `length_um`).

    Random Fourier features: cheap to evaluate at arbitrary points, no grid stored.
    """

    freqs: np.ndarray  # (K, 2) rad/µm
    phases: np.ndarray  # (K,)

    @classmethod
    def make(cls, rng: np.random.Generator, length_um: float, k: int = 32) -> SmoothField:
        freqs = rng.normal(0.0, 1.0 / length_um, size=(k, 2))
        return cls(freqs.astype(np.float64), rng.uniform(0, 2 * np.pi, size=k))

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        shape = np.shape(u)
        f = self.freqs.astype(np.float32)
        uu = np.asarray(u, dtype=np.float32).reshape(-1, 1)
        vv = np.asarray(v, dtype=np.float32).reshape(-1, 1)
        arg = uu * f[:, 0]
        arg += vv * f[:, 1]
        arg += self.phases.astype(np.float32)
        np.cos(arg, out=arg)
        out = arg.sum(axis=1) * np.float32(math.sqrt(2.0 / len(self.phases)))
        return out.reshape(shape)


@dataclass(frozen=True)
class Blob:
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float  # radians


def _norm_ppf(p: float) -> float:
    """Inverse standard normal CDF, for turning a tumour fraction into a field threshold."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(min(max(p, 1e-6), 1 - 1e-6))


@dataclass(frozen=True)
class CaseLayout:
    """Where tissue, tumour and positive cells are, for one case, in H&E micrometres."""

    key: int
    width_um: float
    height_um: float
    blobs: tuple[Blob, ...]
    wobble: SmoothField
    tumour: SmoothField
    nests: SmoothField
    eosin_var: SmoothField
    pos_fields: dict[str, SmoothField]
    tumour_thr: float
    stroma_occupancy: float
    lymph_occupancy: float

    # ---- regions -------------------------------------------------------------------------
    def envelope(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """> 0 inside tissue; smooth in between so thresholds give wobbly but clean borders."""
        u = np.asarray(u, dtype=np.float32)
        v = np.asarray(v, dtype=np.float32)
        best = np.full(np.shape(u), -10.0, dtype=np.float32)
        for b in self.blobs:
            c, s = math.cos(b.angle), math.sin(b.angle)
            du, dv = u - b.cx, v - b.cy
            a = (du * c + dv * s) / b.rx
            bb = (-du * s + dv * c) / b.ry
            np.maximum(best, 1.0 - np.sqrt(a * a + bb * bb), out=best)
        env = best + 0.12 * self.wobble(u, v)
        # safety net: never tissue within 3 % of the short side from the border
        margin = 0.03 * min(self.width_um, self.height_um)
        border = np.minimum(np.minimum(u, self.width_um - u), np.minimum(v, self.height_um - v))
        return np.minimum(env, (border - margin) / (2.0 * margin))

    def tumour_score(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """> 0 where tumour epithelium is (nests inside tumour regions)."""
        t = self.tumour(u, v) - self.tumour_thr
        n = self.nests(u, v) + 0.9
        return np.minimum(t, 0.5 * n)

    def positivity(self, marker: str, u: np.ndarray, v: np.ndarray, frac: float) -> np.ndarray:
        """Spatially varying probability that a tumour cell is positive for `marker`.

        logit p = logit(frac) + 1.0 * field: clusters of strongly and weakly positive tumour.
        """
        f = min(max(frac, 1e-3), 1 - 1e-3)
        z = math.log(f / (1 - f)) + 1.0 * self.pos_fields[marker](u, v)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def make_layout(
    case_seed: int,
    width_um: float,
    height_um: float,
    tumour_fraction: float,
    composition: float = 0.0,
) -> CaseLayout:
    """Build the layout of one case. `composition` (-1..1) shifts tumour/stroma content only.

    The random draws do not depend on `composition`, so a shifted cohort keeps every other detail.
    """
    rng = np.random.default_rng([case_seed, 101])
    n_blobs = int(rng.integers(1, 4))
    blobs = []
    long_w = width_um >= height_um
    L, S = (width_um, height_um) if long_w else (height_um, width_um)
    for i in range(n_blobs):
        frac = (i + 0.5) / n_blobs
        along = (0.5 + (frac - 0.5) * 0.55) * L + rng.uniform(-0.04, 0.04) * L
        across = 0.5 * S + rng.uniform(-0.05, 0.05) * S
        r_along = (0.45 / n_blobs + 0.09) * L * rng.uniform(0.85, 1.05)
        r_across = 0.43 * S * rng.uniform(0.85, 1.05)
        ang = rng.uniform(-0.25, 0.25)
        if long_w:
            blobs.append(Blob(along, across, r_along, r_across, ang))
        else:
            blobs.append(Blob(across, along, r_across, r_along, ang))
    scale = min(width_um, height_um)
    wobble = SmoothField.make(rng, 0.12 * scale)
    tumour = SmoothField.make(rng, 260.0)
    nests = SmoothField.make(rng, 45.0)
    eosin_var = SmoothField.make(rng, 120.0)
    pos_fields = {m: SmoothField.make(rng, 220.0) for m in MARKERS}
    stroma_occ = float(rng.uniform(0.18, 0.28))
    lymph_occ = float(rng.uniform(0.04, 0.12))
    tf = min(max(tumour_fraction + 0.3 * composition, 0.05), 0.9)
    stroma_occ *= 1.0 - 0.4 * composition
    layout = CaseLayout(
        key=int(case_seed) & 0x7FFFFFFF,
        width_um=width_um,
        height_um=height_um,
        blobs=tuple(blobs),
        wobble=wobble,
        tumour=tumour,
        nests=nests,
        eosin_var=eosin_var,
        pos_fields=pos_fields,
        tumour_thr=_norm_ppf(1.0 - tf),
        stroma_occupancy=min(max(stroma_occ, 0.02), 0.6),
        lymph_occupancy=lymph_occ,
    )
    # shrink the blobs until the tissue keeps clear of the border (the wobble can push it out)
    for _ in range(20):
        pts = tissue_points(layout, step_um=min(width_um, height_um) / 50)
        m = 0.04 * min(width_um, height_um)
        if len(pts) == 0 or (
            pts[:, 0].min() > m
            and pts[:, 1].min() > m
            and pts[:, 0].max() < width_um - m
            and pts[:, 1].max() < height_um - m
        ):
            break
        cx, cy = width_um / 2, height_um / 2
        shrunk = tuple(
            Blob(
                cx + 0.95 * (b.cx - cx), cy + 0.95 * (b.cy - cy), 0.95 * b.rx, 0.95 * b.ry, b.angle
            )
            for b in layout.blobs
        )
        layout = replace(layout, blobs=shrunk)
    return layout


def tissue_points(layout: CaseLayout, step_um: float = 40.0) -> np.ndarray:
    """(N, 2) µm coordinates of a coarse grid of tissue points: for placement and checks."""
    us = np.arange(step_um / 2, layout.width_um, step_um, dtype=np.float32)
    vs = np.arange(step_um / 2, layout.height_um, step_um, dtype=np.float32)
    U, V = np.meshgrid(us, vs)
    inside = layout.envelope(U, V) > 0
    return np.stack([U[inside], V[inside]], axis=1)


@dataclass(frozen=True)
class CellStates:
    """Ground truth of grid cells: centre (µm, before jitter), type, positivity per marker."""

    u: np.ndarray
    v: np.ndarray
    tumour: np.ndarray
    lymph: np.ndarray
    fibro: np.ndarray
    p_positive: dict[str, np.ndarray]  # spatial positivity probability (tumour cells; else 0)
    positive: dict[str, np.ndarray]


def cell_states(
    layout: CaseLayout,
    fractions: dict[str, float],
    ci: np.ndarray,
    cj: np.ndarray,
    markers: tuple[str, ...] = MARKERS,
) -> CellStates:
    """Which cells (ci, cj) of the grid hold what, and which tumour cells are positive.

    Every stain of a case calls this with the same arguments for the same cells, which is what
    makes H&E and IHC agree cell by cell. Also the ground truth for tests and evaluation.
    """
    ci = np.asarray(ci, dtype=np.int64)
    cj = np.asarray(cj, dtype=np.int64)
    g = CELL_UM
    u0 = ((ci + 0.5 + 0.5 * (cj & 1)) * g).astype(np.float32)  # brick rows: less grid-like
    v0 = ((cj + 0.5) * g).astype(np.float32)
    in_tissue = layout.envelope(u0, v0) > 0
    tum = in_tissue & (layout.tumour_score(u0, v0) > 0)
    occ = hash_uniform(ci, cj, layout.key, S_OCC)
    is_tumour = tum & (occ < 0.92)
    is_lymph = in_tissue & ~tum & (occ < layout.lymph_occupancy)
    is_fibro = (
        in_tissue & ~tum & ~is_lymph & (occ < layout.lymph_occupancy + layout.stroma_occupancy)
    )
    t_idx = np.flatnonzero(is_tumour)
    pos, prob = {}, {}
    for m in markers:
        p = layout.positivity(m, u0[t_idx], v0[t_idx], fractions[m])
        prob[m] = np.zeros(len(ci), np.float32)
        prob[m][t_idx] = p
        pos[m] = np.zeros(len(ci), bool)
        pos[m][t_idx] = hash_uniform(ci[t_idx], cj[t_idx], layout.key, S_MARKER[m]) < p
    return CellStates(u0, v0, is_tumour, is_lymph, is_fibro, prob, pos)
