"""timm-style model registry: `@register_model` factories and `create_model(name, **cfg)`.

Checkpoints store the model name and its config, so `create_model(name, **config)` rebuilds the
exact architecture before the state dict is loaded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from cscl.errors import InputError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory under `name` (decorator)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **cfg) -> nn.Module:
    """Build a registered model from keyword config (the same dict stored in config.json)."""
    if name not in _MODELS:
        raise InputError(f"unknown model {name!r}", hint=f"known models: {list_models()}")
    return _MODELS[name](**cfg)
