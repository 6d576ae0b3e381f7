"""Shared training plumbing: autocast, seeding, run metadata (device and git commit come from
`cscl.runtime`, progress from `cscl.progress`: their one homes)."""

from __future__ import annotations

import contextlib
import platform
import random
from importlib import metadata

import numpy as np
import torch

from cscl.runtime import git_commit


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on GPU (METHOD.md), plain float32 on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def environment() -> dict:
    """Package versions and git commit recorded in every checkpoint's config.json."""
    pk = {}
    for name in ("cscl", "torch", "numpy", "timm", "h5py", "scikit-learn"):
        try:
            pk[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pk[name] = None
    return {"python": platform.python_version(), "packages": pk, "git_commit": git_commit()}
