"""What an encoder is: a spec (how to build and feed it) and the loaded, frozen `Encoder`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to build a named patch encoder from a weights file.

    `arch` and `kwargs` go to `timm.create_model(arch, num_classes=0, **kwargs)`; `pool` is
    timm's `global_pool` ("avg", "token" = class token, …; None = the architecture's default).
    `mean`/`std`/`input_size` override timm's pretrained config (None = take it from timm).
    `remap` turns the checkpoint's keys into timm's (after the generic `module.`/`model.`
    prefix stripping); `ignore_prefixes` are checkpoint keys that may be left unused (heads).
    """

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pool: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_size: int | None = None  # fixed model input side (patches are resized to it)
    remap: Callable[[StateDict], StateDict] | None = None
    ignore_prefixes: tuple[str, ...] = ("fc.", "head.", "classifier.", "head_dist.", "last_linear.")


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
    channels_last: bool = (
        False  # model converted to NHWC (CNNs under bf16 on CPU: oneDNN's fast path)
    )

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
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

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
