"""`cscl heatmap`: draw a trained model's attention over slide thumbnails, one slide or many."""

from __future__ import annotations

import argparse

HELP = "draw the slide encoder's attention per patch beside the slide thumbnail (PNG + HTML)"

FEATURE_EXT = (".h5", ".hdf5")
TABLE_EXT = (".csv", ".tsv", ".parquet")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run dir of `cscl pretrain` (or 'mean-pool')")
    p.add_argument(
        "--features",
        required=True,
        nargs="+",
        help="feature file(s) (.h5) and/or folder(s) of them: one card per slide",
    )
    p.add_argument(
        "--slide",
        "--slides",
        dest="slide",
        required=True,
        help="the slide (one feature file), a folder of slides, or a manifest "
        "(csv/parquet with slide_uri, optionally slide_id); slides are matched by slide id",
    )
    p.add_argument(
        "--out",
        required=True,
        help="X.png: one slide → X.png + X.html; a folder: index.html + <slide_id>.png",
    )
    p.add_argument("--mpp", type=float, default=None, help="level-0 µm/px if the file lacks it")
    p.add_argument("--thumbnail-max", type=int, default=1024, help="longest thumbnail side (px)")
    p.add_argument(
        "--normalize",
        choices=("relative", "minmax", "rank"),
        default="relative",
        help="colour scale: relative = weight × N, 1 = uniform (linear; default)",
    )
    p.add_argument("--cmap", default="inferno", help="matplotlib colour map")
    p.add_argument("--alpha", type=float, default=0.6, help="opacity of the heatmap")
    p.add_argument("--top-k", type=int, default=5, help="outline the K most attended patches")
    p.add_argument("--gallery", type=int, default=8, help="K most + K least attended patches")
    p.add_argument("--reader", default="auto", help="slide reader: auto | openslide | tifffile")


def _feature_files(items: list[str]) -> list[str]:
    from cscl.io import storage

    out: list[str] = []
    for it in items:
        if it.lower().endswith(FEATURE_EXT):
            out.append(it)
        else:  # a folder / prefix of feature files
            out += [u for u in storage.list_uris(it) if u.lower().endswith(FEATURE_EXT)]
    return out


def _slides_by_id(source: str, n_features: int) -> dict[str, str] | str:
    """slide id → slide URI for a folder or manifest; the path itself for one slide."""
    from cscl.io import storage
    from cscl.io.manifest import read_table, slide_id_from_uri

    if source.lower().endswith(TABLE_EXT):
        t = read_table(source)
        uris = [storage.resolve_relative(u, source) for u in t["slide_uri"]]
        ids = t["slide_id"] if "slide_id" in t.columns else [slide_id_from_uri(u) for u in uris]
        return dict(zip(map(str, ids), uris, strict=True))
    if storage.is_s3(source) or storage.local_path(source).is_dir():
        if storage.is_s3(source) and n_features == 1 and not source.endswith("/"):
            return source
        return {slide_id_from_uri(u): u for u in storage.list_uris(source)}
    return source


def run(args: argparse.Namespace) -> int:
    from cscl.errors import InputError
    from cscl.features import read_features
    from cscl.heatmap import attention_report_html, render_attention, write_attention_report
    from cscl.io import storage
    from cscl.train.checkpoint import load_trained

    files = _feature_files(args.features)
    if not files:
        raise InputError(f"no feature files (.h5) in {args.features}")
    slides = _slides_by_id(args.slide, len(files))
    single_png = args.out.lower().endswith(".png")
    if single_png and len(files) != 1:
        raise InputError(
            f"--out {args.out} is one PNG but {len(files)} feature files were given",
            hint="give a folder as --out for many slides",
        )
    model = load_trained(args.model)
    maps = []
    for f in files:
        sf = read_features(f)
        size0 = sf.patch_size_level0
        if size0 <= 0:
            raise InputError(
                f"{f} does not state patch_size_level0 (attr of `coords`)",
                hint="re-extract the features with `cscl extract`",
            )
        if isinstance(slides, str):
            slide = slides
        elif sf.slide_id in slides:
            slide = slides[sf.slide_id]
        else:
            raise InputError(
                f"no slide with id {sf.slide_id!r} (of {f}) in {args.slide}",
                hint="slides are matched by file name without extension or the manifest slide_id",
            )
        _, attention = model.embed(sf.features.astype("float32"), sf.coords)
        maps.append(
            render_attention(
                slide,
                sf.coords,
                attention,
                size0,
                slide_id=sf.slide_id,
                title=f"{sf.slide_id} · {model.model_version}",
                thumbnail_max=args.thumbnail_max,
                mpp=args.mpp,
                normalize=args.normalize,
                cmap=args.cmap,
                alpha=args.alpha,
                top_k=args.top_k,
                gallery_k=args.gallery,
                reader=args.reader,
            )
        )
        print(f"{sf.slide_id}: {'nearly uniform attention' if maps[-1].flat else 'drawn'}")
    if single_png:
        storage.write_bytes(args.out, maps[0].figure_png)
        page = args.out[: -len(".png")] + ".html"
        storage.write_bytes(
            page, attention_report_html(maps, f"attention · {maps[0].slide_id}").encode()
        )
        print(f"wrote {args.out} and {page}")
    else:
        print(f"wrote {write_attention_report(maps, args.out)}")
    return 0
