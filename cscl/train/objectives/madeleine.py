"""MADELEINE-style baseline (`madeleine`): CSCL's losses without adapter, fusion or stain code
(InfoNCE T=0.001 + GOT between the H&E and each IHC slide embedding); RankMe selection."""

from __future__ import annotations

from typing import Any, ClassVar

from cscl.train.objectives.cscl import CsclObjective
from cscl.train.registry import register_objective


@register_objective("madeleine")
class MadeleineObjective(CsclObjective):
    DEFAULTS: ClassVar[dict[str, Any]] = dict(
        fusion=False, stain_embed=False, pairing="random", temperature=0.001
    )
    adapter_use: ClassVar[str] = "never"
