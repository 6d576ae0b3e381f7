"""H-optimus-0 and H-optimus-1 (Bioptimus): ViT-g/14 with 4 registers (timm's DINOv2-reg4 giant:
SwiGLU, SiLU, LayerScale) → 1536-d class token, with the publisher's own mean/std.

Specs from the model cards (huggingface.co/bioptimus/H-optimus-0, /bioptimus/H-optimus-1: timm
`hf-hub:bioptimus/H-optimus-*`, mean (0.707223, 0.578729, 0.703617), std (0.211883, 0.230117,
0.177517), 224 px) and TRIDENT's `HOptimus0InferenceEncoder`/`HOptimus1InferenceEncoder` (timm
`vit_giant_patch14_reg4_dinov2`, img_size 224, global_pool "token", init_values 1e-5; strict load).
"""

from __future__ import annotations

from cscl.wsi.encoders.base import EncoderSpec
from cscl.wsi.encoders.registry import register_encoder

HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)


def _hoptimus(card: str) -> EncoderSpec:
    return EncoderSpec(
        arch="vit_giant_patch14_reg4_dinov2",
        kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
        pool="token",
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        input_size=224,
        source=f"huggingface.co/bioptimus/{card} model card; TRIDENT HOptimus loaders",
    )


@register_encoder("h-optimus-0")
def h_optimus_0() -> EncoderSpec:
    return _hoptimus("H-optimus-0")


@register_encoder("h-optimus-1")
def h_optimus_1() -> EncoderSpec:
    return _hoptimus("H-optimus-1")
