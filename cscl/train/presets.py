"""Named training presets: config overrides per stage ("adapter", "slide") or per objective.

The defaults of the objectives are the recipe that the planted-signal benchmark supports
(docs/METHOD-NOTES.md, "The recipe"): InfoNCE T = 0.07, GOT off, residual stage-1 adapter. The
paper's values are kept as a preset to reproduce them, not as the default, because at cohort
sizes below the paper's they collapse the embedding (issue 10):
- "paper": T = 0.001 for CSCL and MADELEINE-style, GOT weight 1, plain (non-residual) adapter;
- "quick": a few epochs, few tokens and a small ABMIL — the README walk-through on a laptop.
Options given explicitly always win over a preset.
"""

from __future__ import annotations

from typing import Any

from cscl.errors import InputError
from cscl.models.abmil import SMALL_ABMIL
from cscl.train.registry import objective_class

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "adapter": dict(epochs=3, pairs_per_case=64, warmup_epochs=1),
        "slide": dict(
            epochs=5, n_tokens=256, warmup_epochs=1, rankme_after=2, abmil=dict(SMALL_ABMIL)
        ),  # fmt: skip
    },
    "paper": {
        "adapter": dict(residual=False, got_weight=1.0),
        "cscl": dict(temperature=0.001, got_weight=1.0),
        "madeleine": dict(temperature=0.001, got_weight=1.0),
    },
}


def preset_overrides(preset: str | None, objective: str) -> dict[str, Any]:
    """The overrides `preset` makes for `objective`: its stage's entry, then the objective's."""
    if not preset:
        return {}
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}", hint=f"one of {sorted(PRESETS)}")
    entry = PRESETS[preset]
    return {**entry.get(objective_class(objective).stage, {}), **entry.get(objective, {})}
