"""What an encoder is: a spec (how to build and feed it) and the loaded, frozen `Encoder`."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cscl.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
StateDict = dict[str, torch.Tensor]

# Pooling of a ViT's output tokens that timm's `global_pool` cannot express: the class token
# concatenated with the mean of the patch tokens (registers excluded), as Virchow/Virchow2 publish
# their embedding (dim = 2 × width).
CLS_MEAN = "cls+mean"
# Layer kwargs (mlp_layer, act_layer, norm_layer…) are written as "module.name" strings so a spec
# is JSON (feature files and bundles record it); only these modules may be named.
_LAYER_MODULES = ("timm.layers", "torch.nn")


def resolve_layer(ref: str) -> Any:
    """ "timm.layers.SwiGLUPacked" → the object; only timm.layers / torch.nn names are allowed."""
    mod, _, name = ref.rpartition(".")
    if mod not in _LAYER_MODULES:
        raise InputError(
            f"encoder layer {ref!r} is not in {' or '.join(_LAYER_MODULES)}",
            hint="name a layer as 'timm.layers.X' or 'torch.nn.X'",
        )
    try:
        return getattr(importlib.import_module(mod), name)
    except AttributeError as exc:
        raise InputError(f"encoder layer {ref!r} does not exist in this timm/torch") from exc


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to build a named patch encoder from a weights file.

    `arch` and `kwargs` go to `timm.create_model(arch, num_classes=0, **kwargs)` (a kwarg ending
    in `_layer` given as "timm.layers.X"/"torch.nn.X" is resolved to that class). `pool` is
    timm's `global_pool` ("avg", "token" = class token, …; None = the architecture's default) or
    `CLS_MEAN`. `mean`/`std`/`input_size` override timm's pretrained config (None = from timm).
    `remap` turns the checkpoint's keys into timm's (after the generic `module.`/`model.`
    prefix stripping); `ignore_prefixes` are checkpoint keys that may be left unused (heads).
    `source` says where the spec comes from (model card, publisher code) — shown by `cscl
    encoders`. `hash_spec` puts the spec into the extractor hash; it is False only for the
    encoders whose features predate recorded specs (their name alone identified them).
    """

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pool: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_size: int | None = None  # fixed model input side (patches are resized to it)
    remap: Callable[[StateDict], StateDict] | None = None
    ignore_prefixes: tuple[str, ...] = ("fc.", "head.", "classifier.", "head_dist.", "last_linear.")
    source: str = ""
    hash_spec: bool = True

    def timm_kwargs(self) -> dict[str, Any]:
        """kwargs for timm.create_model, layer names resolved, pooling applied."""
        kw = {
            k: resolve_layer(v) if k.endswith("_layer") and isinstance(v, str) else v
            for k, v in self.kwargs.items()
        }
        if self.pool == CLS_MEAN:
            kw["global_pool"] = ""  # all tokens out; TokenPool makes the embedding
        elif self.pool is not None:
            kw["global_pool"] = self.pool
        return kw

    def identity(self) -> dict[str, Any]:
        """What decides the features besides the weights (JSON): recorded in feature files and
        bundles, hashed into the extractor identity, and enough to rebuild the encoder."""
        return {
            "arch": self.arch,
            "kwargs": dict(sorted(self.kwargs.items())),
            "pool": self.pool,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "input_size": self.input_size,
        }

    def identity_json(self) -> str:
        return json.dumps(self.identity(), sort_keys=True)

    def with_identity(self, ident: dict[str, Any] | str) -> EncoderSpec:
        """This spec (its remap/ignore rules) with the architecture recorded in `ident`."""
        d = json.loads(ident) if isinstance(ident, str) else dict(ident)
        return EncoderSpec(
            arch=str(d["arch"]),
            kwargs=dict(d.get("kwargs") or {}),
            pool=d.get("pool"),
            mean=tuple(d["mean"]) if d.get("mean") else None,
            std=tuple(d["std"]) if d.get("std") else None,
            input_size=d.get("input_size"),
            remap=self.remap,
            ignore_prefixes=self.ignore_prefixes,
            source=self.source,
            hash_spec=self.hash_spec,
        )


class TokenPool(torch.nn.Module):
    """A timm ViT whose embedding is [class token, mean of patch tokens] (Virchow's recipe)."""

    def __init__(self, vit: torch.nn.Module):
        super().__init__()
        self.vit = vit
        self.num_prefix_tokens = int(getattr(vit, "num_prefix_tokens", 1))
        self.num_features = 2 * int(vit.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(x)
        patches = tokens[:, self.num_prefix_tokens :]
        return torch.cat([tokens[:, 0], patches.mean(1)], dim=-1)


@dataclass
class Encoder:
    """A frozen backbone in eval mode plus the preprocessing it expects."""

    name: str
    model: torch.nn.Module = field(repr=False)
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int | None  # fixed model input side, or None when any size works
    weights_digest: str  # sha256 of the weights file, or "random-seed<N>"
    random_init: bool
    device: torch.device
    spec: EncoderSpec | None = field(default=None, repr=False)
    channels_last: bool = False  # model in NHWC (CNNs under bf16: oneDNN/cuDNN fast layout)
    # (mean, std) as (1, 3, 1, 1) tensors per device, made once: building them per batch with
    # torch.tensor(..., device="cuda") is a blocking host→device copy, a sync on every batch
    _norm: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on any device → normalised float on the encoder's device.

        Only normalisation (and a resize when the model needs a fixed size): patches are already
        at the target resolution, so the centre crop of timm's eval transform would drop tissue.
        """
        x = batch.to(self.device, non_blocking=True).float().div_(255.0)
        if self.input_size and x.shape[-1] != self.input_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True
            )
        mean, std = self.normalisation(x.device)
        return (x - mean) / std

    def normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) on `device`, shaped (1, 3, 1, 1); built once per device."""
        if device not in self._norm:
            with torch.inference_mode(False):  # plain tensors: usable outside inference mode
                self._norm[device] = tuple(
                    torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)
                    for v in (self.mean, self.std)
                )
        return self._norm[device]

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        """Features (B, dim) float32 of a uint8 batch, computed in `precision` ("fp32" | "bf16"
        autocast; None: bf16 on CUDA, fp32 on CPU). bf16 changes the features (~1 % relative),
        so extraction records it in the extractor hash (cscl.wsi.extract.effective_precision)."""
        if precision is None:
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        x = self.prepare(batch)
        if precision == "bf16" and x.dim() == 4 and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = self.model(x)
        return y.float()
