"""Phikon-v2 (Owkin): a DINOv2 ViT-L/16 distributed in Hugging Face `Dinov2Model` key layout,
remapped here onto timm's ViT so no `transformers` install is needed.

Spec from the model card and config (huggingface.co/owkin/phikon-v2: `Dinov2Model`, hidden 1024,
24 layers, 16 heads, patch 16, LayerScale, GELU MLP ratio 4, LayerNorm eps 1e-6; embedding =
`last_hidden_state[:, 0]`, the 1024-d class token after the final LayerNorm; ImageNet mean/std,
224 px) and TRIDENT's `Phikonv2InferenceEncoder` (same pooling and transform).
"""

from __future__ import annotations

import re

import torch

from cscl.errors import InputError
from cscl.wsi.encoders.base import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, StateDict
from cscl.wsi.encoders.registry import register_encoder

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_IN_LAYER = {  # HF Dinov2Layer → timm Block (q/k/v are concatenated separately)
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale2.lambda1": "ls2.gamma",
}
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_UNUSED = ("embeddings.mask_token",)  # used only in DINOv2 pretraining


def hf_dinov2_to_timm(sd: StateDict, grid: int | None = None) -> StateDict:
    """Hugging Face `Dinov2Model` keys (optionally under `dinov2.`) → timm VisionTransformer keys.

    Keys of a classification head (`classifier.*`) pass through unchanged (ignored on load). With
    `grid`, a position embedding for another grid is resampled (bicubic, as DINOv2 does at run
    time) to grid × grid patches.
    """
    out: StateDict = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        k = key.removeprefix("dinov2.")
        if k in _UNUSED:
            continue
        if k in _TOP:
            out[_TOP[k]] = t
            continue
        m = _LAYER.match(k)
        if m is None:
            out[key] = t  # unknown to the remap: reported as unexpected unless a head
            continue
        i, rest = int(m.group(1)), m.group(2)
        if rest.startswith("attention.attention."):
            qkv.setdefault(i, {})[rest.removeprefix("attention.attention.")] = t
        elif rest in _IN_LAYER:
            out[f"blocks.{i}.{_IN_LAYER[rest]}"] = t
        else:
            out[key] = t
    for i, parts in qkv.items():
        for kind in ("weight", "bias"):
            names = [f"{p}.{kind}" for p in ("query", "key", "value")]
            if not all(n in parts for n in names):
                raise InputError(f"HF Dinov2 layer {i} lacks one of {names}")
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in names], dim=0)
    pos = out.get("pos_embed")
    if grid is not None and pos is not None and pos.shape[1] != grid * grid + 1:
        from timm.layers import resample_abs_pos_embed

        out["pos_embed"] = resample_abs_pos_embed(
            pos, new_size=[grid, grid], num_prefix_tokens=1, interpolation="bicubic"
        )
    return out


@register_encoder("phikon-v2")
def phikon_v2() -> EncoderSpec:
    return EncoderSpec(
        arch="vit_large_patch16_224",
        kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5},
        pool="token",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        remap=lambda sd: hf_dinov2_to_timm(sd, grid=224 // 16),
        source="huggingface.co/owkin/phikon-v2 model card + config; TRIDENT Phikonv2InferenceEncoder",
    )
