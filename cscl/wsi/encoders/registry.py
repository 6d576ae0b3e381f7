"""Named patch encoders (timm's model registry is the model): one decorated function each.

    @register_encoder("resnet18")
    def resnet18() -> EncoderSpec:
        return EncoderSpec(arch="resnet18", mean=IMAGENET_MEAN, std=IMAGENET_STD)

A name that is not registered but is a timm model still works (timm's pretrained config gives
its normalisation): `--backbone` has always accepted any timm name.
"""

from __future__ import annotations

from collections.abc import Callable

import timm

from cscl.errors import InputError
from cscl.wsi.encoders.base import EncoderSpec

_ENCODERS: dict[str, Callable[[], EncoderSpec]] = {}


def register_encoder(name: str) -> Callable[[Callable[[], EncoderSpec]], Callable[[], EncoderSpec]]:
    """Function decorator: the function returns the `EncoderSpec` of encoder `name`."""

    def deco(fn: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
        if name in _ENCODERS and _ENCODERS[name] is not fn:
            raise ValueError(f"encoder {name!r} is registered twice")
        _ENCODERS[name] = fn
        return fn

    return deco


def list_encoders() -> list[str]:
    """Registered encoder names (any timm model name is accepted as well)."""
    return sorted(_ENCODERS)


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of a registered encoder, else a plain timm architecture of that name."""
    if name in _ENCODERS:
        return _ENCODERS[name]()
    if timm.is_model(name):
        return EncoderSpec(arch=name)
    raise InputError(
        f"unknown timm backbone {name!r} (and no registered encoder of that name: "
        f"{', '.join(list_encoders()) or 'none'})",
        hint="see timm.list_models(), or register an encoder in cscl/wsi/encoders/",
    )
