"""`cscl heatmap`: draw a trained model's attention over a slide thumbnail."""

from __future__ import annotations

import argparse

HELP = "draw the slide encoder's attention per patch over the slide thumbnail (PNG)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run dir of `cscl pretrain` (or 'mean-pool')")
    p.add_argument("--features", required=True, help="feature file (.h5) of the slide")
    p.add_argument("--slide", required=True, help="the slide (path or s3://) the features are of")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--mpp", type=float, default=None, help="level-0 µm/px if the file lacks it")
    p.add_argument("--thumbnail-max", type=int, default=1024, help="longest thumbnail side (px)")
    p.add_argument(
        "--normalize",
        choices=("rank", "minmax"),
        default="rank",
        help="attention → colour: by rank (robust to a few peaks) or min-max",
    )
    p.add_argument("--cmap", default="inferno", help="matplotlib colour map")
    p.add_argument("--alpha", type=float, default=0.55, help="opacity of the heatmap")
    p.add_argument("--top-k", type=int, default=5, help="outline the K most attended patches")
    p.add_argument("--reader", default="auto", help="slide reader: auto | openslide | tifffile")


def run(args: argparse.Namespace) -> int:
    from cscl.errors import InputError
    from cscl.features import read_features
    from cscl.heatmap import attention_heatmap
    from cscl.train.checkpoint import load_trained

    sf = read_features(args.features)
    size0 = sf.patch_size_level0
    if size0 <= 0:
        raise InputError(
            f"{args.features} does not state patch_size_level0 (attr of `coords`)",
            hint="re-extract the features with `cscl extract`",
        )
    model = load_trained(args.model)
    _, attention = model.embed(sf.features.astype("float32"), sf.coords)
    out = attention_heatmap(
        args.slide,
        sf.coords,
        attention,
        size0,
        args.out,
        thumbnail_max=args.thumbnail_max,
        mpp=args.mpp,
        title=f"{sf.slide_id} · {model.model_version}",
        normalize=args.normalize,
        cmap=args.cmap,
        alpha=args.alpha,
        top_k=args.top_k,
        reader=args.reader,
    )
    print(f"wrote {out}")
    return 0
