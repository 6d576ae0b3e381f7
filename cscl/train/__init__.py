"""Training: one loop (`fit`), registered objectives (stage-1 `adapter`, `cscl`, `madeleine`,
`histostainalign`, `supervised`), one entry point (`pretrain`), self-describing run dirs
(`load_trained` is the public loader).

    from cscl.train import pretrain
    pretrain("cscl", features=..., manifest=..., registration=..., adapter=RUN, out=OUT,
             config={"epochs": 30, "abmil": SMALL_ABMIL})

New objective: one file in cscl/train/objectives/ with `@register_objective("name")` on an
`Objective` subclass (see cscl.train.objective).
"""

from cscl.models.abmil import ABMIL_PRESETS, SMALL_ABMIL
from cscl.train import objectives  # noqa: F401  (registers the built-in objectives)
from cscl.train.checkpoint import TrainedModel, load_adapter, load_trained
from cscl.train.fit import FitConfig, FitResult, Selection, clamp_schedule, fit
from cscl.train.objective import Objective, TrainInputs
from cscl.train.objectives.adapter import AdapterConfig
from cscl.train.registry import (
    create_objective,
    list_objectives,
    objective_class,
    objective_config,
    register_objective,
)
from cscl.train.run import pretrain
from cscl.train.stage2 import SlideConfig

__all__ = [
    "ABMIL_PRESETS",
    "SMALL_ABMIL",
    "AdapterConfig",
    "FitConfig",
    "FitResult",
    "Objective",
    "Selection",
    "SlideConfig",
    "TrainInputs",
    "TrainedModel",
    "clamp_schedule",
    "create_objective",
    "fit",
    "list_objectives",
    "load_adapter",
    "load_trained",
    "objective_class",
    "objective_config",
    "pretrain",
    "register_objective",
]
