"""CONCH v1 / v1.5 (Mahmood Lab): refused, with the reason — there is no pure-timm build.

- CONCH v1 is an open_clip CoCa model (`conch_ViT-B-16` from github.com/mahmoodlab/CONCH, loaded
  with `conch.open_clip_custom.create_model_from_pretrained`): not a timm architecture.
- CONCH v1.5 (huggingface.co/MahmoodLab/conchv1_5, `pytorch_model_vision.bin`) is an iBOT-style
  ViT-L/16 trunk at 448 px followed by an attentional pooler (1 query, 8 heads, 1024 → 768) and a
  LayerNorm; its published 768-d embedding is the pooler's output (TRIDENT
  `model_zoo/conchv1_5/conchv1_5.py`, `CONCHVisionTower`). timm has the trunk but not that
  pooler, so a timm build would produce other features than the publisher's.

What to do instead: extract with TRIDENT (`--patch_encoder conch_v15`) and bring the files in with
`cscl import-features`; they then train, package (`--features-only`) and serve like ours.
"""

from __future__ import annotations

from cscl.errors import InputError
from cscl.wsi.encoders.base import EncoderSpec
from cscl.wsi.encoders.registry import register_encoder

REASON = (
    "has no pure-timm build: CONCH v1 is an open_clip CoCa model, and CONCH v1.5's 768-d "
    "embedding comes from an attentional pooler on its ViT-L/16 trunk that timm does not have"
)
HINT = (
    "extract with TRIDENT (--patch_encoder conch_v15 / conch_v1) and run "
    "`cscl import-features --source trident …`; see cscl/wsi/encoders/conch.py"
)


def _refuse(name: str) -> EncoderSpec:
    raise InputError(f"encoder {name!r} {REASON}", hint=HINT)


@register_encoder("conch-v1.5")
def conch_v15() -> EncoderSpec:
    return _refuse("conch-v1.5")


@register_encoder("conch")
def conch_v1() -> EncoderSpec:
    return _refuse("conch")
