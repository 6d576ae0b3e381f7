"""Prov-GigaPath tile encoder (Providence/Microsoft): ViT-g with 16 px patches, SwiGLU, LayerScale
→ 1536-d class token.

Spec from the model card / timm config (huggingface.co/prov-gigapath/prov-gigapath: architecture
`vit_giant_patch14_dinov2`, model_args img_size 224, patch_size 16, embed_dim 1536, depth 40,
num_heads 24, init_values 1e-5, mlp_ratio 5.33334) and TRIDENT's `GigaPathInferenceEncoder`
(strict load of the distributed timm `pytorch_model.bin`); ImageNet mean/std; 224 px input (the
card resizes to 256 and centre-crops 224 — patches here are already at the target resolution).
"""

from __future__ import annotations

from cscl.wsi.encoders.base import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from cscl.wsi.encoders.registry import register_encoder


@register_encoder("prov-gigapath")
def prov_gigapath() -> EncoderSpec:
    return EncoderSpec(
        arch="vit_giant_patch14_dinov2",
        kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "dynamic_img_size": True,
        },
        pool="token",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        source="huggingface.co/prov-gigapath/prov-gigapath config; TRIDENT GigaPathInferenceEncoder",
    )
