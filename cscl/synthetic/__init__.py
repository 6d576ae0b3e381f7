"""Synthetic paired multi-stain breast cancer cohorts with planted, known biology.

`generate_cohort(...)` writes a cohort folder (docs/CONTRACTS.md, "Synthetic cohort folder");
`ShiftSpec` controls stain / scanner / composition drift; `cscl.synthetic.testing.tiny_cohort`
is the small fast cohort other tests build on.

The planted model (what a method can and cannot learn from these slides):
- Labels (`biology.py`): per case ER, PGR, HER2 status and KI67 high/low with realistic
  correlations, the surrogate subtype (LumA / LumB / HER2+ / TNBC) derived from them, survival
  from an exponential hazard that is higher for TNBC, HER2+, LumB and KI67-high, with censoring,
  and a stratified ~70/30 train/test split.
- Tissue (`layout.py`): blobs of tissue on glass, tumour nests and stroma from smooth random
  fields, one potential nucleus per 14 µm grid cell. Each case has a smooth positivity field per
  marker (logit p = logit(case fraction) + GaussianField, length scale 220 µm): positive tumour
  cells come in clusters, so positivity varies SPATIALLY within a slide. `cell_states` gives the
  ground truth of every cell.
- IHC (`render.py`) shows status STRONGLY: DAB in positive tumour nuclei (ER, PGR, KI67) or on
  the membrane of positive tumour cells (HER2); positive cases have 50–85 % positive tumour
  cells, negative ones 1–5 %.
- H&E shows it WEAKLY, in exactly the same cells: KI67+ nuclei ~10 % larger and ~12 % darker,
  ER+ nuclei rounder and ~5 % smaller, PGR+ nuclei ~7 % darker, HER2+ cells ~0.08 OD more eosin
  in the cytoplasm (`he_cue` scales all of it; 0 removes it). A per-case baseline of nuclear size
  and darkness varies more than the cue, so H&E-only prediction must compare cells within a
  slide. Because the cue sits where the IHC is positive, pairing an H&E patch with the IHC patch
  of the same tissue location (through the true transform in transforms.csv) carries more
  information than random pairing.
- Geometry: each IHC slide is the same tissue under a random rigid transform (rotation about the
  slide centre up to `max_angle`, translation up to 5 %), written to transforms.csv as the map
  H&E level-0 (x, y) → IHC level-0 (x, y).
"""

from cscl.synthetic.cohort import DEFAULT_STAINS, generate_cohort
from cscl.synthetic.shift import PRESETS, ShiftSpec

__all__ = ["generate_cohort", "ShiftSpec", "PRESETS", "DEFAULT_STAINS"]
