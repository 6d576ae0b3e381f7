"""Attention heatmaps: where on the slide the slide encoder looked — the picture a pathologist
checks to see whether the model attends to tumour or to artefacts.

What is drawn, and why:
- the slide thumbnail and, beside it, the same thumbnail with each patch painted by its
  attention on a LINEAR colour scale. The default scale is `relative`: softmax weight × N, so
  1 means "the uniform share" and 20 means "twenty times the uniform share". A rank (percentile)
  scale makes any map look structured — a flat map (every patch 1/N) would show a smooth ramp of
  noise — so it is only an explicit option.
- a flatness warning in the figure and in the HTML when the attention's entropy is ≥
  `FLAT_ENTROPY` of its maximum (log N): such a map shows no preference and must not be read.
- a gallery of the top-k and bottom-k patches read from the slide at their coordinates, with
  their attention, so one can see WHAT the model looked at, not only where.
- `write_attention_report` puts many slides on one HTML page (one card per slide, self-contained
  so the Kubeflow UI can show it) plus one PNG figure per slide.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cscl.errors import InputError
from cscl.io import storage
from cscl.wsi.readers import open_slide

FLAT_ENTROPY = 0.95  # normalised entropy (H / log N) at or above which a map is "flat"
SCALES = ("relative", "minmax", "rank")
FLAT_WARNING = "attention is nearly uniform: this map shows no preference"


def normalise_attention(attention: np.ndarray, how: str = "relative") -> np.ndarray:
    """Attention on a colour scale.

    `relative` (default): weight / Σweights × N — 1 = uniform share, linear, ≥ 0;
    `minmax`: (a − min) / (max − min), linear; `rank`: percentile (ties averaged), NOT linear —
    it stretches a flat map into a ramp, use it only to compare orderings.
    """
    a = np.asarray(attention, dtype=np.float64).ravel()
    if a.size == 0:
        return a
    if how == "relative":
        if (a < 0).any():
            raise InputError(
                "attention has negative values: it is not a softmax weight",
                hint="pass softmax weights, or draw with normalize='minmax'",
            )
        s = float(a.sum())
        return np.ones_like(a) if s <= 0 else a / s * a.size
    if how == "minmax":
        lo, hi = float(a.min()), float(a.max())
        return np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)
    if how == "rank":
        from scipy.stats import rankdata

        return np.zeros_like(a) if a.size == 1 else (rankdata(a) - 1.0) / (a.size - 1.0)
    raise InputError(f"unknown attention normalisation {how!r}", hint=f"use one of {SCALES}")


def attention_entropy(a: np.ndarray) -> float:
    """Entropy (nats) of attention normalised to sum 1 (low = focused on few patches)."""
    p = np.clip(np.asarray(a, dtype=np.float64).ravel(), 0, None)
    s = p.sum()
    if s <= 0:
        return 0.0
    p = p[p > 0] / s
    return float(-(p * np.log(p)).sum())


def attention_flatness(a: np.ndarray) -> float:
    """Entropy / its maximum log N, in [0, 1]: 1 = perfectly uniform (no preference at all)."""
    n = np.asarray(a).size
    if n <= 1:
        return 1.0
    if np.clip(np.asarray(a, dtype=np.float64), 0, None).sum() <= 0:
        return 1.0
    return attention_entropy(a) / math.log(n)


def paint_patches(
    shape: tuple[int, int],
    coords: np.ndarray,
    values: np.ndarray,
    patch_size_level0: float,
    downsample: float,
) -> np.ndarray:
    """(h, w) float grid, NaN where no patch; each patch's level-0 box filled with its value
    (where patches overlap, the higher value wins so a hot patch is never hidden)."""
    h, w = shape
    grid = np.full((h, w), np.nan, dtype=np.float32)
    c = np.asarray(coords, dtype=np.float64) / downsample
    s = float(patch_size_level0) / downsample
    x0 = np.clip(np.floor(c[:, 0]).astype(int), 0, w)
    y0 = np.clip(np.floor(c[:, 1]).astype(int), 0, h)
    x1 = np.clip(np.maximum(np.ceil(c[:, 0] + s).astype(int), x0 + 1), 0, w)
    y1 = np.clip(np.maximum(np.ceil(c[:, 1] + s).astype(int), y0 + 1), 0, h)
    for i in np.argsort(values, kind="stable"):  # ascending: higher values painted last
        if x1[i] > x0[i] and y1[i] > y0[i]:
            grid[y0[i] : y1[i], x0[i] : x1[i]] = values[i]
    return grid


def _check_inputs(coords, attention, patch_size_level0) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(coords)
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim == 2 and c.ndim == 2 and a.shape[1] == len(c) and a.shape[0] != len(c):
        a = a.mean(0)  # (heads, N) → mean over heads
    a = a.ravel()
    if c.ndim != 2 or c.shape[1] != 2:
        raise InputError(f"coords must be (N, 2) level-0 (x, y), got shape {c.shape}")
    if len(c) != len(a):
        raise InputError(
            f"{len(c)} patch coordinates but {len(a)} attention values",
            hint="coords and attention must come from the same feature file",
        )
    if len(c) == 0:
        raise InputError("no patches to draw (empty coords)")
    if not np.isfinite(a).all():
        raise InputError("attention has NaN/inf values", hint="check the model and the features")
    if not (patch_size_level0 and float(patch_size_level0) > 0):
        raise InputError(
            f"patch_size_level0 must be > 0, got {patch_size_level0}",
            hint="feature files store it as the `patch_size_level0` attr of `coords`",
        )
    return c.astype(np.float64), a


@dataclass
class PatchTile:
    """One patch of the gallery: where it is, its attention, its pixels (JPEG)."""

    index: int  # row in the feature file
    x: int  # level-0 top-left
    y: int
    attention: float  # the raw weight
    relative: float  # weight × N (1 = uniform share)
    jpeg: bytes


@dataclass
class AttentionMap:
    """Everything one slide's card shows; `figure_png` is the thumbnail + heatmap figure."""

    slide_id: str
    title: str
    figure_png: bytes
    n_patches: int
    flatness: float  # entropy / log N
    scale: str
    max_attention: float
    max_relative: float  # max weight × N: how many times the uniform share the top patch gets
    top: list[PatchTile] = field(default_factory=list)
    bottom: list[PatchTile] = field(default_factory=list)

    @property
    def flat(self) -> bool:
        return self.flatness >= FLAT_ENTROPY


def _read_tile(wsi, x: float, y: float, size0: float, px: int) -> bytes:
    """The patch at level-0 (x, y) of side `size0`, read from the coarsest level that still has
    ≥ `px` pixels across, resized to `px` × `px`, as JPEG."""
    level = wsi.best_level_for_downsample(max(1.0, size0 / px))
    ds = wsi.level_downsamples[level]
    side = max(1, int(round(size0 / ds)))
    rgb = wsi.read_region((int(x), int(y)), level, (side, side))
    im = Image.fromarray(np.ascontiguousarray(rgb[..., :3])).resize((px, px), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def _gallery(wsi, c, a, rel, inside, size0, k, px) -> tuple[list[PatchTile], list[PatchTile]]:
    idx = np.nonzero(inside)[0]
    order = idx[np.argsort(-a[idx], kind="stable")]
    k = int(min(max(k, 0), len(order)))
    if k == 0:
        return [], []
    top_i = order[:k]
    bottom_i = [i for i in order[::-1][:k] if i not in set(top_i)]

    def tile(i: int) -> PatchTile:
        return PatchTile(
            index=int(i),
            x=int(c[i, 0]),
            y=int(c[i, 1]),
            attention=float(a[i]),
            relative=float(rel[i]),
            jpeg=_read_tile(wsi, c[i, 0], c[i, 1], size0, px),
        )

    return [tile(i) for i in top_i], [tile(i) for i in bottom_i]


def render_attention(
    slide_uri: str | Path,
    coords: np.ndarray,
    attention: np.ndarray,
    patch_size_level0: float,
    *,
    slide_id: str | None = None,
    title: str | None = None,
    mpp: float | None = None,
    normalize: str = "relative",
    cmap: str = "inferno",
    alpha: float = 0.6,
    top_k: int = 5,
    gallery_k: int = 8,
    tile_px: int = 160,
    thumbnail_max: int = 1024,
    reader: str = "auto",
) -> AttentionMap:
    """Draw `attention` (N,) — or (heads, N), heads averaged — of patches at level-0 top-left
    `coords` (N, 2): the thumbnail beside the heatmap (top_k patches outlined in cyan) and the
    `gallery_k` most / least attended patches read from the slide."""
    c, a = _check_inputs(coords, attention, patch_size_level0)
    v = normalise_attention(a, normalize)
    rel = normalise_attention(a, "relative") if (a >= 0).all() else v
    size0 = float(patch_size_level0)
    with open_slide(str(slide_uri), backend=reader, mpp=mpp) as wsi:
        slide_name = wsi.path.name
        w0, h0 = wsi.width, wsi.height
        inside = (c[:, 0] < w0) & (c[:, 1] < h0) & (c > -size0).all(1)
        if not inside.any():
            raise InputError(
                f"none of the {len(c)} patches lies inside {slide_name} ({w0}×{h0} px)",
                hint="are the features from this slide?",
            )
        ds = max(1.0, max(w0, h0) / float(thumbnail_max))
        thumb = wsi.read_downsampled(ds)
        top, bottom = _gallery(wsi, c, a, rel, inside, size0, gallery_k, tile_px)
    flatness = attention_flatness(a)
    grid = paint_patches(thumb.shape[:2], c, v, size0, ds)
    sid = slide_id or Path(slide_name).stem
    png = _render(
        thumb, grid, c, v, a, size0, ds, title or sid, normalize, cmap, alpha, top_k, flatness
    )
    return AttentionMap(
        slide_id=sid,
        title=title or sid,
        figure_png=png,
        n_patches=len(a),
        flatness=flatness,
        scale=normalize,
        max_attention=float(a.max()),
        max_relative=float(rel.max()),
        top=top,
        bottom=bottom,
    )


def attention_heatmap(
    slide_uri: str | Path,
    coords: np.ndarray,
    attention: np.ndarray,
    patch_size_level0: float,
    out_png: str | Path,
    thumbnail_max: int = 1024,
    **kwargs,
) -> str:
    """Write the figure of `render_attention` (no gallery) as a PNG; returns its path/URI."""
    m = render_attention(
        slide_uri,
        coords,
        attention,
        patch_size_level0,
        thumbnail_max=thumbnail_max,
        **{"gallery_k": 0, **kwargs},
    )
    storage.write_bytes(str(out_png), m.figure_png)
    return str(out_png)


_SCALE_LABEL = {
    "relative": "attention × N  (1 = uniform share, linear)",
    "minmax": "attention, min–max scaled (linear)",
    "rank": "attention percentile (rank: NOT linear)",
}


def _render(
    thumb, grid, c, v, a, size0, ds, title, normalize, cmap, alpha, top_k, flatness
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = grid.shape
    panel_w = 6.0
    fig_h = max(3.5, min(12.0, panel_w * h / max(w, 1) + 1.6))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(2 * panel_w + 1.2, fig_h), dpi=110)
    ax0.imshow(thumb)
    ax0.set_title("slide", fontsize=10)
    ax1.imshow(thumb)
    vmax = float(np.nanmax(v)) if normalize == "relative" else 1.0
    vmax = max(vmax, 1e-12)
    im = ax1.imshow(
        np.ma.masked_invalid(grid),
        cmap=cmap,
        vmin=0.0,
        vmax=vmax,
        alpha=alpha,
        interpolation="nearest",
    )
    k = int(min(max(top_k, 0), len(v)))
    for i in np.argsort(-a, kind="stable")[:k]:
        ax1.add_patch(
            Rectangle(
                (c[i, 0] / ds, c[i, 1] / ds),
                size0 / ds,
                size0 / ds,
                fill=False,
                edgecolor="cyan",
                linewidth=1.2,
            )
        )
    ax1.set_title(
        f"attention of {len(v)} patches" + (f", top {k} outlined" if k else ""), fontsize=10
    )
    cb = fig.colorbar(im, ax=ax1, fraction=0.045, pad=0.02)
    cb.set_label(_SCALE_LABEL[normalize], fontsize=9)
    if normalize == "relative" and vmax >= 1.0:
        cb.ax.axhline(1.0, color="cyan", lw=2, ls="--")  # the uniform share
    for ax in (ax0, ax1):
        ax.set_axis_off()
    n = max(len(a), 1)
    head = (
        f"{title}\nmax weight {a.max():.3g} (= {a.max() / max(a.sum(), 1e-300) * n:.1f}× uniform), "
        f"entropy {attention_entropy(a):.2f} of {math.log(n):.2f} nats ({flatness:.0%})"
    )
    fig.suptitle(head, fontsize=10)
    if flatness >= FLAT_ENTROPY:
        fig.text(
            0.5,
            0.01,
            f"⚠ {FLAT_WARNING} (entropy {flatness:.0%} of maximum)",
            ha="center",
            va="bottom",
            fontsize=11,
            color="white",
            backgroundcolor="#cf222e",
        )
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML: one card per slide
# ---------------------------------------------------------------------------------------------


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _tiles_html(tiles: list[PatchTile]) -> str:
    cells = []
    for t in tiles:
        cells.append(
            f"<figure><img src='{_data_uri(t.jpeg, 'image/jpeg')}' alt='patch {t.index}'>"
            f"<figcaption><b>{t.relative:.2f}×</b> uniform<br>w={t.attention:.3g}<br>"
            f"({t.x}, {t.y})</figcaption></figure>"
        )
    return f"<div class=gallery>{''.join(cells)}</div>"


def _anchor(slide_id: str) -> str:
    return "s-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in slide_id)


def attention_card_html(m: AttentionMap) -> str:
    """One slide's card: warning, figure, numbers, top/bottom galleries."""
    warn = (
        f"<p class=warn>⚠ {html.escape(FLAT_WARNING)} — entropy is {m.flatness:.0%} of its "
        f"maximum; the top/bottom patches below are arbitrary.</p>"
        if m.flat
        else ""
    )
    parts = [
        f"<section class='card{' flat' if m.flat else ''}' id='{_anchor(m.slide_id)}'>",
        f"<h2>{html.escape(m.title)}</h2>",
        warn,
        f"<img class=fig src='{_data_uri(m.figure_png, 'image/png')}' alt='attention heatmap'>",
        f"<p>{m.n_patches} patches; colour scale: {html.escape(_SCALE_LABEL[m.scale])}; the most "
        f"attended patch gets {m.max_relative:.1f}× the uniform share; entropy "
        f"{m.flatness:.0%} of maximum (warning at ≥ {FLAT_ENTROPY:.0%}).</p>",
    ]
    if m.top:
        parts += [f"<h3>Most attended {len(m.top)} patches</h3>", _tiles_html(m.top)]
    if m.bottom:
        parts += [f"<h3>Least attended {len(m.bottom)} patches</h3>", _tiles_html(m.bottom)]
    parts.append("</section>")
    return "".join(parts)


_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1500px}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:3px 8px;font-size:13px}
.card{border:1px solid #ccc;border-radius:6px;padding:0.5em 1em;margin:1.5em 0}
.card.flat{border-color:#cf222e}.warn{background:#cf222e;color:#fff;padding:6px 10px;
font-weight:bold}img.fig{max-width:100%}.gallery{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;font-size:12px;text-align:center}figure img{width:160px;height:160px}
tr.flat td{color:#cf222e}"""


def attention_report_html(maps: list[AttentionMap], title: str = "cscl attention") -> str:
    """Self-contained page: an index table of all slides, then one card per slide."""
    rows = "".join(
        f"<tr class='{'flat' if m.flat else ''}'><td><a href='#{_anchor(m.slide_id)}'>"
        f"{html.escape(m.slide_id)}</a></td><td>{m.n_patches}</td><td>{m.max_relative:.1f}×</td>"
        f"<td>{m.flatness:.0%}</td><td>{'⚠ nearly uniform' if m.flat else ''}</td></tr>"
        for m in maps
    )
    n_flat = sum(m.flat for m in maps)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{len(maps)} slide(s); {n_flat} with nearly uniform attention.</p>"
        "<table><tr><th>slide</th><th>patches</th><th>top patch</th><th>entropy / max</th>"
        f"<th></th></tr>{rows}</table>"
        + "".join(attention_card_html(m) for m in maps)
        + "</body></html>"
    )


def write_attention_report(
    maps: list[AttentionMap], out_dir: str | Path, title: str = "cscl attention"
) -> str:
    """`out_dir/index.html` (all slides) and `out_dir/<slide_id>.png` (each figure)."""
    if not maps:
        raise InputError("no attention maps to write", hint="pass at least one slide")
    out = str(out_dir).rstrip("/")
    for m in maps:
        storage.write_bytes(f"{out}/{m.slide_id}.png", m.figure_png)
    index = f"{out}/index.html"
    storage.write_bytes(index, attention_report_html(maps, title).encode())
    return index
