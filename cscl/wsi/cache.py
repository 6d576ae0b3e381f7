"""A local copy of an s3:// object (slide or weights file), downloaded once and size-checked.

OpenSlide, tifffile and torch need a file on disk; slides are GBs, so a copy is kept under
`CSCL_CACHE_DIR` (default ~/.cache/cscl) and reused while its size matches the object's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cscl.io import storage


def cache_root() -> Path:
    """`CSCL_CACHE_DIR`, default ~/.cache/cscl."""
    return Path(os.environ.get("CSCL_CACHE_DIR") or Path.home() / ".cache" / "cscl")


def local_copy(uri: str, kind: str) -> Path:
    """A local path for `uri`: local paths as they are, s3:// objects cached under `<root>/<kind>`."""
    if not storage.is_s3(uri):
        return storage.local_path(uri)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    dest = cache_root() / kind / hashlib.sha256(uri.encode()).hexdigest()[:16] / name
    info = storage.stat(uri)
    if dest.exists() and dest.stat().st_size == info.size:
        return dest
    return storage.download(uri, dest)
