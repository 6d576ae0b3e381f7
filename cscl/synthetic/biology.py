"""Planted biology: per-case receptor status, subtype, survival and split, from the seed.

Model (documented so that methods can be judged against a known truth):
- ER+ with p=0.62. PGR+ | ER+ with p=0.75; PGR is never positive when ER- (so every case has a
  subtype under the four rules below). HER2+ with p=0.22 if ER+, 0.45 if ER-. KI67 high with
  p=0.35 if ER+ & HER2-, 0.55 if ER+ & HER2+, 0.75 if ER-.
- Subtype: LumA = ER+ & KI67 low & HER2-; LumB = ER+ & (KI67 high or HER2+);
  HER2+ = ER- & HER2+; TNBC = ER- & HER2- (PGR- follows).
- Fraction of tumour cells positive for each marker (mean over the slide; it varies spatially):
  positive/high: ER 0.8, PGR 0.65, HER2 0.85, KI67 0.5; negative/low: ER 0.01, PGR 0.01,
  HER2 0.02, KI67 0.05; each jittered per case by N(0, 0.3) on the logit scale. Within a slide
  the probability varies smoothly: logit p(x) = logit(fraction) + 1.0·GaussianField(x), length
  scale 220 µm (cscl.synthetic.layout), so positive cells come in clusters.
- Survival: T ~ Exponential(hazard), hazard = exp(β·x) / 150 months with β: TNBC 1.0, HER2+ 0.7,
  LumB 0.45, KI67 high +0.5 (on top of subtype). Censoring C ~ Uniform(6, 120) months;
  os_time = max(min(T, C), 0.1), os_event = T <= C.
- Split: per subtype, cases are shuffled and the first round(0.3 n) go to `test`.
- Per-case H&E morphology baseline (nuclear size ×N(1, 0.06), hematoxylin ×N(1, 0.08)) is
  larger than the per-cell status cue, so H&E status prediction needs within-slide contrasts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

POS_FRACTION = {
    "ER": (0.01, 0.80),
    "PGR": (0.01, 0.65),
    "HER2": (0.02, 0.85),
    "KI67": (0.05, 0.50),
}
SUBTYPES = ("LumA", "LumB", "HER2+", "TNBC")
_BETA = {"TNBC": 1.0, "HER2+": 0.7, "LumB": 0.45, "LumA": 0.0}


@dataclass(frozen=True)
class CaseBiology:
    case_id: str
    er: bool
    pgr: bool
    her2: bool
    ki67_high: bool
    subtype: str
    os_time: float
    os_event: int
    split: str
    fractions: dict  # marker -> mean positive fraction of tumour cells
    nuc_scale: float
    h_scale: float
    tumour_fraction: float

    def status(self, marker: str) -> bool:
        return {"ER": self.er, "PGR": self.pgr, "HER2": self.her2, "KI67": self.ki67_high}[marker]


def subtype_of(er: bool, pgr: bool, her2: bool, ki67_high: bool) -> str:
    """The surrogate molecular subtype rules stated in the module docstring."""
    if er:
        return "LumB" if (ki67_high or her2) else "LumA"
    if her2:
        return "HER2+"
    if not pgr:
        return "TNBC"
    raise ValueError("ER-/PGR+/HER2- has no subtype under these rules")


def _logit_jitter(p: float, z: float) -> float:
    lg = math.log(p / (1 - p)) + z
    return 1.0 / (1.0 + math.exp(-lg))


def case_id(i: int) -> str:
    return f"case{i:03d}"


def make_biology(n_cases: int, seed: int) -> list[CaseBiology]:
    """Statuses, survival and split for `n_cases` cases; a pure function of `seed`."""
    rng = np.random.default_rng([seed, 7])
    rows = []
    for i in range(n_cases):
        er = bool(rng.random() < 0.62)
        pgr = bool(er and rng.random() < 0.75)
        her2 = bool(rng.random() < (0.22 if er else 0.45))
        p_ki = (0.55 if her2 else 0.35) if er else 0.75
        ki67 = bool(rng.random() < p_ki)
        sub = subtype_of(er, pgr, her2, ki67)
        hazard = math.exp(_BETA[sub] + (0.5 if ki67 else 0.0)) / 150.0
        t = float(rng.exponential(1.0 / hazard))
        c = float(rng.uniform(6.0, 120.0))
        status = {"ER": er, "PGR": pgr, "HER2": her2, "KI67": ki67}
        fr = {
            m: round(_logit_jitter(POS_FRACTION[m][int(status[m])], rng.normal(0, 0.3)), 4)
            for m in POS_FRACTION
        }
        rows.append(
            dict(
                case_id=case_id(i),
                er=er,
                pgr=pgr,
                her2=her2,
                ki67_high=ki67,
                subtype=sub,
                os_time=round(max(min(t, c), 0.1), 3),
                os_event=int(t <= c),
                split="train",
                fractions=fr,
                nuc_scale=float(rng.normal(1.0, 0.06)),
                h_scale=float(rng.normal(1.0, 0.08)),
                tumour_fraction=float(rng.uniform(0.35, 0.6)),
            )
        )
    split_rng = np.random.default_rng([seed, 11])
    for sub in SUBTYPES:
        idx = [i for i, r in enumerate(rows) if r["subtype"] == sub]
        split_rng.shuffle(idx)
        for j in idx[: int(round(0.3 * len(idx)))]:
            rows[j]["split"] = "test"
    return [CaseBiology(**r) for r in rows]


def labels_frame(cases: list[CaseBiology]) -> pd.DataFrame:
    """labels.csv as in docs/CONTRACTS.md ("Synthetic cohort folder")."""

    def pn(b: bool) -> str:
        return "positive" if b else "negative"

    return pd.DataFrame(
        {
            "case_id": [c.case_id for c in cases],
            "split": [c.split for c in cases],
            "subtype": [c.subtype for c in cases],
            "er_status": [pn(c.er) for c in cases],
            "pgr_status": [pn(c.pgr) for c in cases],
            "her2_status": [pn(c.her2) for c in cases],
            "ki67_status": ["high" if c.ki67_high else "low" for c in cases],
            "os_time": [c.os_time for c in cases],
            "os_event": [c.os_event for c in cases],
        }
    )


def biology_dict(c: CaseBiology) -> dict:
    return asdict(c)
