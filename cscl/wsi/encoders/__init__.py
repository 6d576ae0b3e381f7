"""Patch encoders: a registry of named encoders (one small file per family here) over timm.

    from cscl.wsi.encoders import load_encoder
    enc = load_encoder("resnet18", weights="s3://…/resnet18.pth", device="cuda")
    feats = enc(uint8_batch)  # (B, enc.dim) float32

A new encoder is one new file in this package with an `@register_encoder(name)` function that
returns its `EncoderSpec`; every public module here except the machinery is imported on use.
"""

from __future__ import annotations

import sys

from cscl.plugins import import_plugins
from cscl.wsi.encoders.base import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderSpec
from cscl.wsi.encoders.factory import load_encoder
from cscl.wsi.encoders.registry import encoder_spec, list_encoders, register_encoder
from cscl.wsi.encoders.weights import load_state_dict

UNAVAILABLE = import_plugins(
    sys.modules[__name__], skip=frozenset({"base", "factory", "registry", "weights"})
)

__all__ = [
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
