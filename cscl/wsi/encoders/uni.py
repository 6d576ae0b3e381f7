"""UNI and UNI2-h (Mahmood Lab): ViT-L/16 and ViT-H/14-reg8 SwiGLU pathology encoders.

Specs from the publisher's model cards (huggingface.co/MahmoodLab/UNI, /MahmoodLab/UNI2-h) and
TRIDENT's loaders (github.com/mahmoodlab/TRIDENT trident/patch_encoder_models/load.py,
`UNIInferenceEncoder`, `UNIv2InferenceEncoder`): the distributed `pytorch_model.bin` is a plain timm
state dict (loaded strict), embedding = class token, ImageNet mean/std, 224 px input.
"""

from __future__ import annotations

from cscl.wsi.encoders.base import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from cscl.wsi.encoders.registry import register_encoder


@register_encoder("uni")
def uni() -> EncoderSpec:
    """UNI: ViT-L/16 with LayerScale (init_values) → 1024-d class token."""
    return EncoderSpec(
        arch="vit_large_patch16_224",
        kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        pool="token",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        source="huggingface.co/MahmoodLab/UNI model card; TRIDENT UNIInferenceEncoder",
    )


@register_encoder("uni2-h")
def uni2_h() -> EncoderSpec:
    """UNI2-h: ViT-H/14, 8 register tokens, SwiGLU MLP with SiLU → 1536-d class token."""
    return EncoderSpec(
        arch="vit_giant_patch14_224",
        kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "mlp_layer": "timm.layers.SwiGLUPacked",
            "act_layer": "torch.nn.SiLU",
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        pool="token",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        source="huggingface.co/MahmoodLab/UNI2-h model card (timm_kwargs); TRIDENT UNIv2InferenceEncoder",
    )
