"""Small facts about where code runs, each answered in one place: device, git commit, hashes, JSON.

Why one module: these were re-implemented in training, extraction, packaging and serving with
small differences (a device helper that raised on a missing GPU and one that did not; two
`sha256_file`; three "make this JSON-safe" functions with different NaN handling).
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from cscl.errors import InputError

_REPO = Path(__file__).resolve().parent.parent


def pick_device(device: Any = None):
    """`None`/`""`/`"auto"` → CUDA when visible, else CPU; an explicit device is checked."""
    import torch

    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}", hint="use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} asked for, but no CUDA GPU is visible",
            hint="drop --device to use the CPU",
        )
    return dev


def git_commit(short: bool = False) -> str | None:
    """Commit of the checkout this code runs from, `.dirty` if cscl code has local changes;
    None outside a git checkout (an installed wheel, a container image)."""
    try:
        run = dict(cwd=_REPO, capture_output=True, text=True, timeout=5, check=True)
        cmd = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
        sha = subprocess.run(cmd, **run).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "cscl", "cscl_platform"], **run
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + (".dirty" if dirty else "")) or None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def jsonable(obj: Any) -> Any:
    """Strict JSON: NaN/inf → None, numpy scalars/arrays → Python, tuples → lists, keys → str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj
