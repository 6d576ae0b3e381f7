"""MADELEINE-style baseline (`madeleine`): CSCL's losses without adapter, fusion, stain code or
location pairing (InfoNCE + optional GOT between the H&E and each IHC slide embedding); RankMe
selection. It follows CSCL's recipe (T = 0.07, GOT off) so that a comparison isolates what CSCL
adds; the "paper" preset gives MADELEINE's own T = 0.001 + GOT."""

from __future__ import annotations

from typing import Any, ClassVar

from cscl.train.objectives.cscl import CsclObjective
from cscl.train.registry import register_objective


@register_objective("madeleine")
class MadeleineObjective(CsclObjective):
    DEFAULTS: ClassVar[dict[str, Any]] = dict(fusion=False, stain_embed=False, pairing="random")
    adapter_use: ClassVar[str] = "never"
