"""Feature-level simulator of paired H&E/IHC cohorts with a PLANTED marker signal.

Not slides: it writes patch-feature files directly (same HDF5 contract as `cscl extract`), for
tests and for benchmarks/planted_signal.py when slide generation + extraction would be too slow.
What it plants, per case:
- tissue on a G×G patch grid (elliptic mask), a tumour blob, a shared per-location texture code;
- marker expression (ER, PGR, HER2, KI67) that varies in space: a positive case expresses the
  marker in a smooth random patch of the tumour, a negative case almost nowhere;
- H&E patch feature = texture/tissue-type mix + WEAK marker directions + a per-slide nuisance
  shift (stain colour / scanner) + noise; IHC patch feature of marker m = texture mix + STRONG
  m-expression direction + its own nuisance + noise, on the IHC slide's own patch grid after a
  rigid H&E→IHC transform (rotation + shift), written to transforms.csv (CONTRACTS.md format);
- survival: exponential time with hazard from ER−, HER2+, KI67-high; random censoring;
- subtype (luminal A / luminal B / HER2-enriched / triple negative) from the four statuses.
Location pairing sees the local marker expression on both sides; random pairing does not.

Calibration (issue 10): the defaults leave learnable headroom. At H&E marker amplitude 1 with the
texture code and tissue layout shared by both stains (the old defaults, `SIM_PRESETS["legacy"]`)
supervised ABMIL on 300 labelled cases reached AUC 0.585 and both contrastive losses were solved by
texture/layout: nothing for a method to earn. `shared_content` is the knob for what H&E and IHC
have in common at a location: "marker" (default: only the marker expression; each IHC slide draws
its own texture code and tissue-type layout), "type" (tissue type + marker), "full" (texture +
tissue type + marker). Ground truth for positive controls is written beside the cohort:
`truth.csv` (per case: fraction of H&E tissue patches expressing each marker = the patch-label
oracle) and `truth_directions.npz` (the H&E marker directions = the true-direction projection).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cscl.features import SlideFeatures, write_features

MARKERS = ("ER", "PGR", "HER2", "KI67")
SHARED_CONTENT = ("marker", "type", "full")
TASKS = {"ER": "er_status", "PGR": "pgr_status", "HER2": "her2_status", "KI67": "ki67_status"}


@dataclass
class SimConfig:
    n_cases: int = 200
    dim: int = 64
    grid: int = 14
    patch_size_level0: int = 512
    n_texture: int = 8
    he_marker_amp: float = 3.0  # weaker than IHC, but enough for supervised MIL (headroom)
    ihc_marker_amp: float = 4.0  # strong
    texture_amp: float = 1.5
    nuisance_sd: float = 0.5
    noise_sd: float = 1.0
    missing_ihc: float = 0.1
    max_angle_deg: float = 8.0
    seed: int = 0
    # what H&E and IHC share at a location besides the marker (see the module docstring)
    shared_content: str = "marker"


# Named simulator settings. "legacy": the pre-issue-10 cohorts (no headroom; kept to reproduce).
SIM_PRESETS: dict[str, dict] = {
    "calibrated": {},
    "legacy": {"he_marker_amp": 1.0, "shared_content": "full"},
}


def subtype_of(er: bool, pgr: bool, her2: bool, ki67: bool) -> str:
    """Surrogate intrinsic subtype from the four IHC statuses (St Gallen-style rules)."""
    if er or pgr:
        return "luminal_b" if (her2 or ki67) else "luminal_a"
    return "her2_enriched" if her2 else "triple_negative"


def _smooth_field(rng, g: int, scale: float = 3.0) -> np.ndarray:
    """Smooth random field on a g×g grid (sum of random Gaussian bumps), in [0, 1]."""
    yy, xx = np.mgrid[0:g, 0:g].astype(float)
    f = np.zeros((g, g))
    for _ in range(4):
        cx, cy = rng.uniform(0, g, 2)
        f += rng.normal() * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * scale**2))
    f -= f.min()
    return f / (f.max() + 1e-9)


def simulate_cohort(out_dir: str | Path, cfg: SimConfig | None = None) -> dict[str, Path]:
    """Write features/<slide>.h5, manifest.csv, labels.csv, transforms.csv under out_dir."""
    cfg = cfg or SimConfig()
    if cfg.shared_content not in SHARED_CONTENT:
        raise ValueError(f"shared_content {cfg.shared_content!r}: one of {SHARED_CONTENT}")
    out = Path(out_dir)
    fdir = out / "features"
    fdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    D, G, ps, K = cfg.dim, cfg.grid, cfg.patch_size_level0, cfg.n_texture
    # fixed "biology → feature" maps shared by the cohort
    A_he = rng.normal(size=(3 + K, D)) / np.sqrt(3 + K)
    A_ihc = rng.normal(size=(3 + K, D)) / np.sqrt(3 + K)
    v_he = np.linalg.qr(rng.normal(size=(D, len(MARKERS))))[0].T  # weak directions in H&E
    w_ihc = np.linalg.qr(rng.normal(size=(D, len(MARKERS))))[0].T
    ehash = "sim-" + hashlib.sha256(repr(cfg).encode()).hexdigest()[:12]
    man, lab, tr, truth = [], [], [], []
    yy, xx = np.mgrid[0:G, 0:G].astype(float)
    for ci in range(cfg.n_cases):
        cid = f"case{ci:04d}"
        er = rng.random() < 0.7
        pgr = (rng.random() < 0.8) if er else (rng.random() < 0.1)
        her2 = rng.random() < 0.25
        ki67 = rng.random() < (0.3 if er else 0.6)
        status = {"ER": er, "PGR": pgr, "HER2": her2, "KI67": ki67}
        haz = 0.02 * np.exp(0.7 * (not er) + 0.6 * her2 + 0.8 * ki67)
        t = rng.exponential(1 / haz)
        c = rng.uniform(20, 150)
        lab.append({
            "case_id": cid,
            "split": "train" if rng.random() < 0.8 else "test",
            **{TASKS[m]: ("positive" if status[m] else "negative") for m in ("ER", "PGR", "HER2")},
            "ki67_status": "high" if ki67 else "low",
            "subtype": subtype_of(er, pgr, her2, ki67),
            "os_time": float(min(t, c)) + 0.1,
            "os_event": int(t <= c),
        })  # fmt: skip
        # tissue + types + texture + expression on the H&E grid
        cx, cy = G / 2 + rng.normal(0, 1, 2)
        rx, ry = rng.uniform(0.35, 0.5, 2) * G
        tissue = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        tumour = _smooth_field(rng, G) > 0.5
        ttype = np.where(tumour, 0, np.where(rng.random((G, G)) < 0.7, 1, 2))
        texture = rng.normal(size=(G, G, K))
        expr = {}
        for m in MARKERS:
            field = _smooth_field(rng, G, 2.0)
            frac = rng.uniform(0.4, 0.9) if status[m] else rng.uniform(0.0, 0.08)
            thr = np.quantile(field[tumour], 1 - frac) if tumour.any() else 1.0
            expr[m] = (tumour & (field >= thr)).astype(float)
        gy, gx = np.nonzero(tissue)
        truth.append({"case_id": cid, **{f"expr_frac_{m}": float(expr[m][gy, gx].mean())
                                         for m in MARKERS}})  # fmt: skip

        def bio(ix, iy, ttype=ttype, texture=texture):
            onehot = np.eye(3)[ttype[iy, ix]] * 2.0
            return np.concatenate([onehot, cfg.texture_amp * texture[iy, ix]], axis=1)

        he_coords = np.stack([gx * ps, gy * ps], 1).astype(np.int64)
        he = bio(gx, gy) @ A_he + rng.normal(0, cfg.nuisance_sd, D)
        for mi, m in enumerate(MARKERS):
            he += cfg.he_marker_amp * expr[m][gy, gx][:, None] * v_he[mi]
        he += rng.normal(0, cfg.noise_sd, he.shape)
        attrs = {"patch_size": 256, "patch_size_level0": ps, "target_mpp": 1.0,
                 "mpp_level0": 0.5, "level0_width": G * ps, "level0_height": G * ps}  # fmt: skip
        sid = f"{cid}_HE"
        write_features(fdir / f"{sid}.h5", SlideFeatures(he.astype(np.float32), he_coords, sid,
                       "HE", ehash, "simulated", dict(attrs), {"random_init": True}))  # fmt: skip
        man.append({"case_id": cid, "stain": "HE", "slide_uri": f"slides/{sid}.svs"})
        for mi, m in enumerate(MARKERS):
            if rng.random() < cfg.missing_ihc:
                continue
            ang = np.deg2rad(rng.uniform(-cfg.max_angle_deg, cfg.max_angle_deg))
            ctr = G * ps / 2
            R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            shift = rng.uniform(-0.7, 0.7, 2) * ps
            tvec = ctr - R @ np.array([ctr, ctr]) + shift
            M = np.hstack([R, tvec[:, None]])
            # IHC patch grid: its own regular grid; each IHC centre mapped back to H&E space
            Minv = np.linalg.inv(np.vstack([M, [0, 0, 1]]))[:2]
            igx, igy = np.mgrid[-1 : G + 1, -1 : G + 1]
            cen = np.stack([igx.ravel(), igy.ravel()], 1) * ps + ps / 2
            back = cen @ Minv[:, :2].T + Minv[:, 2]
            bx = np.floor(back[:, 0] / ps).astype(int)
            by = np.floor(back[:, 1] / ps).astype(int)
            inside = (bx >= 0) & (bx < G) & (by >= 0) & (by < G)
            inside[inside] &= tissue[by[inside], bx[inside]]
            bx, by, cen = bx[inside], by[inside], cen[inside]
            own = {"texture": texture, "ttype": ttype}
            if cfg.shared_content != "full":
                own["texture"] = rng.normal(size=texture.shape)
            if cfg.shared_content == "marker":
                own["ttype"] = np.where(rng.random((G, G)) < 0.3, 0,
                                        np.where(rng.random((G, G)) < 0.7, 1, 2))  # fmt: skip
            ihc = bio(bx, by, **own) @ A_ihc + rng.normal(0, cfg.nuisance_sd, D)
            ihc += cfg.ihc_marker_amp * expr[m][by, bx][:, None] * w_ihc[mi]
            ihc += rng.normal(0, cfg.noise_sd, ihc.shape)
            coords = (cen - ps / 2).astype(np.int64)
            sid = f"{cid}_{m}"
            write_features(fdir / f"{sid}.h5", SlideFeatures(ihc.astype(np.float32), coords,
                           sid, m, ehash, "simulated", dict(attrs), {"random_init": True}))  # fmt: skip
            man.append({"case_id": cid, "stain": m, "slide_uri": f"slides/{sid}.svs"})
            tr.append({"case_id": cid, "stain": m, "angle_deg": float(np.rad2deg(ang)),
                       "tx": float(tvec[0]), "ty": float(tvec[1]),
                       **{f"m{i}{j}": float(M[i, j]) for i in range(2) for j in range(3)}})  # fmt: skip
    paths = {
        "features": fdir,
        "manifest": out / "manifest.csv",
        "labels": out / "labels.csv",
        "transforms": out / "transforms.csv",
        "truth": out / "truth.csv",
    }
    pd.DataFrame(man).to_csv(paths["manifest"], index=False)
    pd.DataFrame(lab).to_csv(paths["labels"], index=False)
    pd.DataFrame(tr).to_csv(paths["transforms"], index=False)
    pd.DataFrame(truth).to_csv(paths["truth"], index=False)
    np.savez(out / "truth_directions.npz", he=v_he, ihc=w_ihc, markers=np.array(MARKERS))
    return paths
