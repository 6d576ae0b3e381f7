"""Models of cscl (timm style): one model per module, registered for `create_model(name, **cfg)`.

- `patch_adapter` (adapter.py): stage-1 per-scale adapter.
- `gated_abmil` (abmil.py): multi-head gated ABMIL aggregator.
- `cross_stain_fusion` (fusion.py): attention across stains at the same tissue location.
- `slide_encoder` (slide_encoder.py): stain embedding + fusion + ABMIL (CSCL stage 2, MADELEINE,
  HistoStainAlign and supervised baselines use it with fusion/stain embedding on or off).
- `status_head` (heads.py): HistoStainAlign IHC-status head.
"""

from cscl.models import abmil, adapter, fusion, heads, slide_encoder  # noqa: F401  (registers)
from cscl.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
