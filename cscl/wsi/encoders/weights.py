"""Encoder weights from a local file or s3:// — never from a hub.

Pathology foundation models (CONCH, UNI, …) are gated and cannot be fetched at run time, so the
weights file is an explicit input; its sha256 enters the extractor hash.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cscl.errors import InputError, StorageError
from cscl.io import storage
from cscl.wsi.encoders.base import StateDict

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "teacher")


def weights_path(weights: str | os.PathLike) -> Path:
    """A local file for `weights` (s3:// objects are cached once); InputError when missing."""
    uri = str(weights)
    try:
        path = storage.fetch(uri) if storage.is_s3(uri) else storage.local_path(uri)
    except StorageError as exc:
        raise InputError(f"cannot fetch weights {uri}: {exc.message}", hint=exc.hint) from exc
    if not storage.is_s3(uri) and not path.is_file():
        raise InputError(f"weights file not found: {path}", hint="check --weights")
    return path


def load_state_dict(path: Path) -> StateDict:
    """A state dict from .safetensors or a torch checkpoint (weights_only; nested keys unwrapped)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # optional: only for .safetensors files

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"cannot load weights {path}: {exc}",
            hint="give a state dict (.pth/.pt/.bin saved with torch.save, or .safetensors)",
        ) from exc
    for key in _WRAPPER_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise InputError(f"weights {path} hold a {type(sd).__name__}, not a state dict")
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in sd.items()}
