"""What an objective is (Lightning's LightningModule half): its models, batches, loss, selection.

An objective is a class registered with `@register_objective(name)` (cscl.train.registry). `fit`
drives it; `pretrain` gives it its inputs and writes its run directory. Lifecycle:

    obj = create_objective(name, inputs, config)   # __init__: check inputs, no heavy work
    fit(obj)  →  obj.setup(device)                  # after seeding: data + models
                 obj.loss(idx, g) per step           # idx = item (case) indices of the batch
                 obj.epoch_metrics() per epoch       # only when `selection()` names a metric
    pretrain  →  obj.run_config(), obj.data_info(), obj.saved_modules()  → config.json + *.pt
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from cscl.data import CohortFeatures
from cscl.errors import InputError
from cscl.train.fit import FitConfig, Selection


@dataclass(frozen=True)
class TrainInputs:
    """Everything an objective may train on; each objective uses what it needs."""

    cohort: CohortFeatures
    registrations: pd.DataFrame | None = None
    labels: pd.DataFrame | None = None
    adapter_dir: str | Path | None = None  # a stage-1 run dir (frozen adapter for stage 2)
    extra: dict[str, Any] = field(default_factory=dict)


class Objective:
    """Base class. Subclasses set the class attributes and implement setup/modules/n_items/loss."""

    name: ClassVar[str] = ""  # set by @register_objective
    Config: ClassVar[type[FitConfig]] = FitConfig  # a frozen dataclass subclassing FitConfig
    DEFAULTS: ClassVar[dict[str, Any]] = {}  # the objective's paper hyper-parameters
    stage: ClassVar[str] = "slide"  # what it trains: "adapter" (stage 1) or "slide" (stage 2)
    needs_labels: ClassVar[bool] = False  # needs a labels table and `config.label_task`
    # stage-1 adapter: "expected" (pipelines pass it), "optional" (used when given), "never"
    adapter_use: ClassVar[str] = "optional"

    def __init__(self, config: FitConfig, inputs: TrainInputs):
        self.config, self.inputs = config, inputs
        self.device = torch.device("cpu")
        if inputs.adapter_dir is not None and self.adapter_use == "never":
            raise InputError(
                f"the {self.name!r} objective uses no stage-1 adapter", hint="drop --adapter"
            )
        if self.needs_labels and (inputs.labels is None or not getattr(config, "label_task", None)):
            raise InputError(
                f"objective {self.name} needs a labels table and a label task",
                hint="pass --labels LABELS.csv --label-task er_status (component: labels_uri, "
                "label_task)",
            )

    @property
    def description(self) -> str:
        """Progress-bar label."""
        return f"train {self.name}"

    def setup(self, device: torch.device) -> None:
        """Build the data and the models on `device` (called by `fit` after seeding)."""
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """The trained modules: optimised, selected and restored by `fit`."""
        raise NotImplementedError

    def n_items(self) -> int:
        """Number of training items (cases) per epoch; batches are index lists into them."""
        raise NotImplementedError

    def loss(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        """Scalar loss of one batch (runs under autocast; draw all randomness from `g`)."""
        raise NotImplementedError

    def selection(self) -> Selection:
        """Checkpoint selection rule (default: the last epoch)."""
        return Selection()

    def epoch_metrics(self) -> dict[str, float]:
        """Per-epoch metrics for the history and the selection (e.g. RankMe, validation loss)."""
        return {}

    def saved_modules(self) -> dict[str, torch.nn.Module]:
        """Modules written to the run dir (default: the trained ones)."""
        return self.modules()

    def run_config(self) -> dict[str, Any]:
        """Objective-specific part of config.json (kind, model names + constructor configs…)."""
        return {"kind": self.name, "objective": self.name}

    def data_info(self) -> dict[str, Any]:
        """Objective-specific facts added to the run config's "data" block."""
        return {}
