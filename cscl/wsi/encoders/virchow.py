"""Virchow and Virchow2 (Paige): ViT-H/14 SwiGLU encoders whose embedding is the class token
concatenated with the mean of the patch tokens (2 × 1280 = 2560-d).

Specs from the model cards (huggingface.co/paige-ai/Virchow, /paige-ai/Virchow2: timm
`vit_huge_patch14_224`, `mlp_layer=SwiGLUPacked`, `act_layer=SiLU`, embedding =
cat([output[:, 0], output[:, 1:].mean(1)]) for Virchow and output[:, 5:] — after 1 class + 4
register tokens — for Virchow2) and TRIDENT's `VirchowInferenceEncoder`/`Virchow2InferenceEncoder`
(same kwargs, strict load of the distributed timm state dict). ImageNet mean/std, 224 px.
"""

from __future__ import annotations

from cscl.wsi.encoders.base import CLS_MEAN, IMAGENET_MEAN, IMAGENET_STD, EncoderSpec
from cscl.wsi.encoders.registry import register_encoder

_VIRCHOW_KWARGS = {
    "img_size": 224,
    "init_values": 1e-5,
    "mlp_ratio": 5.3375,
    "mlp_layer": "timm.layers.SwiGLUPacked",
    "act_layer": "torch.nn.SiLU",
    "dynamic_img_size": True,
}


@register_encoder("virchow")
def virchow() -> EncoderSpec:
    return EncoderSpec(
        arch="vit_huge_patch14_224",
        kwargs=dict(_VIRCHOW_KWARGS),
        pool=CLS_MEAN,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        source="huggingface.co/paige-ai/Virchow model card; TRIDENT VirchowInferenceEncoder",
    )


@register_encoder("virchow2")
def virchow2() -> EncoderSpec:
    return EncoderSpec(
        arch="vit_huge_patch14_224",
        kwargs={**_VIRCHOW_KWARGS, "reg_tokens": 4},
        pool=CLS_MEAN,  # patch tokens start after the class token and the 4 registers
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        source="huggingface.co/paige-ai/Virchow2 model card; TRIDENT Virchow2InferenceEncoder",
    )
