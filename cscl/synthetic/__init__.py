"""Synthetic paired multi-stain breast cancer cohorts with planted, known biology.

`generate_cohort(...)` writes a cohort folder (docs/CONTRACTS.md, "Synthetic cohort folder");
`ShiftSpec` controls stain / scanner / composition drift; `cscl.synthetic.testing.tiny_cohort`
is the small fast cohort other tests build on. The planted model is documented in
`cscl.synthetic.biology` (labels, survival) and `cscl.synthetic.render` (what each stain shows).
"""

from cscl.synthetic.cohort import DEFAULT_STAINS, generate_cohort
from cscl.synthetic.shift import PRESETS, ShiftSpec

__all__ = ["generate_cohort", "ShiftSpec", "PRESETS", "DEFAULT_STAINS"]
