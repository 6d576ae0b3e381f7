"""ResNets with ImageNet weights (the default `resnet18`): the baseline patch encoders."""

from __future__ import annotations

from cscl.wsi.encoders.base import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from cscl.wsi.encoders.registry import register_encoder


@register_encoder("resnet18")
def resnet18() -> EncoderSpec:
    return EncoderSpec(
        arch="resnet18",
        pool="avg",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source="timm",
        hash_spec=False,
    )


@register_encoder("resnet50")
def resnet50() -> EncoderSpec:
    return EncoderSpec(
        arch="resnet50",
        pool="avg",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source="timm",
        hash_spec=False,
    )
