"""Training: stage 1 adapter, stage 2 slide encoder (CSCL, MADELEINE-style), HistoStainAlign,
supervised ABMIL; self-describing checkpoints (`checkpoint.load_trained` is the public loader)."""

from cscl.train.checkpoint import TrainedModel, load_trained
from cscl.train.stage1 import AdapterConfig, train_adapter
from cscl.train.stage2 import SlideConfig, objective_defaults, train_slide_encoder

__all__ = [
    "AdapterConfig",
    "SlideConfig",
    "TrainedModel",
    "load_trained",
    "objective_defaults",
    "train_adapter",
    "train_slide_encoder",
]
