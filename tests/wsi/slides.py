"""Tiny pyramidal slides for the wsi tests, written with tifffile (Aperio or generic TIFF).

Used until/unless `cscl.synthetic.testing.tiny_cohort` is available; kept small (≤ 2k px) so the
whole image fits in memory here. Real OpenSlide reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

BACKGROUND = (242, 242, 244)
COLOURS = {
    # stain: (base, dots)
    "HE": ((232, 160, 200), (95, 60, 150)),
    "KI67": ((205, 205, 228), (140, 90, 45)),
    "HER2": ((210, 205, 225), (160, 105, 50)),
}


def render(w: int, h: int, stain: str = "HE", seed: int = 0, blank: bool = False) -> np.ndarray:
    """White glass with two textured tissue ellipses (stain colours) and a hole in one."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND
    img = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    if blank:
        return img
    base, dots = COLOURS.get(stain, COLOURS["KI67"])
    yy, xx = np.mgrid[0:h, 0:w]
    tissue = ((xx - 0.35 * w) / (0.22 * w)) ** 2 + ((yy - 0.45 * h) / (0.3 * h)) ** 2 < 1
    tissue |= ((xx - 0.72 * w) / (0.15 * w)) ** 2 + ((yy - 0.6 * h) / (0.2 * h)) ** 2 < 1
    hole = ((xx - 0.35 * w) / (0.03 * w)) ** 2 + ((yy - 0.45 * h) / (0.03 * h)) ** 2 < 1
    tissue &= ~hole
    tex = rng.normal(0, 10, (h, w, 3))
    col = np.asarray(base, np.float32) + tex
    spots = rng.random((h, w)) < 0.08
    col[spots] = np.asarray(dots, np.float32) + tex[spots]
    img[tissue] = np.clip(col[tissue], 0, 255).astype(np.uint8)
    return img


def write_slide(
    path: Path,
    img: np.ndarray,
    mpp: float | None = 0.5,
    fmt: str = "aperio",
    mag: float | None = None,
    downsamples=(1, 4),
) -> Path:
    """Tiled JPEG pyramid. Aperio: header with MPP/AppMag; generic: resolution tags (or none)."""
    import tifffile

    h, w = img.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        for k, ds in enumerate(downsamples):
            lvl = img[::ds, ::ds] if ds > 1 else img
            desc = None
            kw = {}
            if fmt == "aperio":
                fields = [f"Aperio Image Library v12.0.0 \r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG"]
                if mag is not None:
                    fields.append(f"AppMag = {mag:g}")
                if mpp is not None:
                    fields.append(f"MPP = {mpp:g}")
                desc = "|".join(fields)
            elif mpp is not None and k == 0:
                kw = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
            tif.write(
                np.ascontiguousarray(lvl),
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                description=desc,
                metadata=None,
                subfiletype=1 if k and fmt != "aperio" else 0,
                **kw,
            )
    return path


def make_cohort(root: Path, n_cases: int = 2, size: int = 1536, mpp: float = 0.5) -> Path:
    """Slides + manifest (relative slide_uri), H&E and KI67 per case."""
    (root / "slides").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_cases):
        for j, stain in enumerate(("HE", "KI67")):
            name = f"case{i:03d}_{stain}.svs"
            write_slide(root / "slides" / name, render(size, size, stain, seed=10 * i + j), mpp)
            rows.append({"case_id": f"case{i:03d}", "stain": stain, "slide_uri": f"slides/{name}"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
