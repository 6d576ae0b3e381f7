"""Patch encoders: a registry of named encoders (one small file per family here) over timm.

    from cscl.wsi.encoders import load_encoder
    enc = load_encoder("uni", weights="s3://…/pytorch_model.bin", device="cuda")
    feats = enc(uint8_batch)  # (B, enc.dim) float32

Names: the registered encoders (`cscl encoders` lists them: uni, uni2-h, virchow, virchow2,
h-optimus-0/1, prov-gigapath, phikon-v2, efficientnet-lite0, resnet18/50; conch refused with the
reason), `timm:<model>[?k=v&…]`, or a bare timm model name.

A new encoder is one new file in this package with an `@register_encoder(name)` function that
returns its `EncoderSpec`; every public module here except the machinery is imported on use.
"""

from __future__ import annotations

import sys

from cscl.plugins import import_plugins
from cscl.wsi.encoders.base import (
    CLS_MEAN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderSpec,
    TokenPool,
)
from cscl.wsi.encoders.factory import load_encoder
from cscl.wsi.encoders.registry import (
    encoder_identity,
    encoder_spec,
    list_encoders,
    register_encoder,
)
from cscl.wsi.encoders.weights import load_state_dict

UNAVAILABLE = import_plugins(
    sys.modules[__name__], skip=frozenset({"base", "factory", "registry", "weights"})
)

__all__ = [
    "CLS_MEAN",
    "TokenPool",
    "encoder_identity",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Encoder",
    "EncoderSpec",
    "encoder_spec",
    "list_encoders",
    "load_encoder",
    "load_state_dict",
    "register_encoder",
]
