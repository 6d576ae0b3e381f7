"""Attention heatmaps over a real (synthetic) slide: painting, rendering, CLI end to end."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cscl.cli import main
from cscl.errors import InputError
from cscl.heatmap import (
    FLAT_ENTROPY,
    FLAT_WARNING,
    attention_flatness,
    attention_heatmap,
    attention_report_html,
    normalise_attention,
    paint_patches,
    render_attention,
)


def _grid_coords(width=2000, height=1500, size=256):
    xs, ys = np.meshgrid(
        np.arange(0, width - size + 1, size), np.arange(0, height - size + 1, size)
    )
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)


def test_normalise_and_paint():
    a = np.array([0.1, 0.5, 0.2, 0.2])
    np.testing.assert_allclose(normalise_attention(a, "minmax"), [0, 1, 0.25, 0.25])
    np.testing.assert_allclose(normalise_attention(a, "rank"), [0, 1, 0.5, 0.5])
    with pytest.raises(InputError):
        normalise_attention(a, "softmax")
    coords = np.array([[0, 0], [100, 0], [50, 50]])
    g = paint_patches((20, 20), coords, np.array([0.2, 0.9, 0.5]), 100, 10.0)
    assert g[0, 0] == pytest.approx(0.2) and g[0, 15] == pytest.approx(0.9)
    assert g[7, 7] == pytest.approx(0.5)  # overlap: the higher value (0.5 > 0.2) wins
    assert g[6, 12] == pytest.approx(0.9)  # overlap of 0.5 and 0.9
    assert np.isnan(g[15, 2]) and np.isnan(g[2, 19]) is np.False_  # no patch / patch 1


def test_attention_heatmap_png_shows_the_hot_region(reg_cohort, tmp_path):
    slide = reg_cohort.parent / "slides" / "case000_HE.svs"
    coords = _grid_coords()
    # attention grows to the right: the right edge must come out hot, the left edge cold
    att = np.exp(coords[:, 0] / 400.0)
    att /= att.sum()
    out = attention_heatmap(
        slide,
        coords,
        att,
        256,
        tmp_path / "h.png",
        thumbnail_max=400,
        normalize="minmax",
        cmap="viridis",
        alpha=1.0,
        top_k=3,
    )
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB")).astype(float)
    assert rgb.shape[1] >= 800 and rgb.shape[0] >= 400
    # viridis: 0 → dark purple (68, 1, 84), 1 → yellow (253, 231, 37); find both in the image
    yellow = (np.abs(rgb - [253, 231, 37]).sum(-1) < 40).sum()
    purple = (np.abs(rgb - [68, 1, 84]).sum(-1) < 40).sum()
    assert yellow > 200 and purple > 200
    ys, xs = np.nonzero(np.abs(rgb - [253, 231, 37]).sum(-1) < 40)
    yp, xp = np.nonzero(np.abs(rgb - [68, 1, 84]).sum(-1) < 40)
    assert np.median(xs) > np.median(xp)  # hot on the right


def test_attention_heatmap_rejects_bad_input(reg_cohort, tmp_path):
    slide = reg_cohort.parent / "slides" / "case000_HE.svs"
    coords = _grid_coords()
    with pytest.raises(InputError, match="attention values"):
        attention_heatmap(slide, coords, np.ones(3), 256, tmp_path / "x.png")
    with pytest.raises(InputError, match="inside"):
        attention_heatmap(slide, coords + 50_000, np.ones(len(coords)), 256, tmp_path / "x.png")
    with pytest.raises(InputError, match="NaN"):
        attention_heatmap(slide, coords, np.full(len(coords), np.nan), 256, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def _tiny_run(run_dir, dim):
    import torch

    from cscl.models import create_model
    from cscl.train.checkpoint import save_run

    torch.manual_seed(0)
    mc = {
        "in_dim": dim,
        "n_stains": 3,
        "stain_embed_dim": 4,
        "fusion_heads": 2,
        "abmil": {
            "hidden": 16,
            "n_heads": 2,
            "head_dim": 8,
            "attn_hidden": 8,
            "embed_dim": 8,
            "token_dim": 4,
        },
    }
    enc = create_model("slide_encoder", **mc)
    cfg = {
        "kind": "cscl",
        "input_dim": dim,
        "he_id": 0,
        "slide_encoder": {"name": "slide_encoder", "config": mc},
    }
    return save_run(run_dir, cfg, {"slide_encoder": enc})


def test_heatmap_cli_end_to_end(reg_cohort, tmp_path, capsys):
    from cscl.features import SlideFeatures, write_features

    slide = reg_cohort.parent / "slides" / "case001_HE.svs"
    coords = _grid_coords()
    rng = np.random.default_rng(0)
    sf = SlideFeatures(
        features=rng.normal(size=(len(coords), 16)).astype(np.float32),
        coords=coords,
        slide_id="case001_HE",
        stain="HE",
        extractor_hash="test",
        encoder="test",
        coord_attrs={"patch_size": 256, "patch_size_level0": 256, "mpp_level0": 0.5},
    )
    h5 = write_features(tmp_path / "case001_HE.h5", sf)
    run = _tiny_run(tmp_path / "run", 16)
    out = tmp_path / "heat.png"
    rc = main(
        [
            "heatmap",
            "--model",
            str(run),
            "--features",
            str(h5),
            "--slide",
            str(slide),
            "--out",
            str(out),
            "--thumbnail-max",
            "300",
        ]
    )
    assert rc == 0 and "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size[0] >= 800 and np.asarray(im.convert("L")).std() > 10
    # a features file of the wrong dimension for the model is refused with a clear message
    sf.features = sf.features[:, :8]
    bad = write_features(tmp_path / "bad.h5", sf)
    rc = main(
        [
            "heatmap",
            "--model",
            str(run),
            "--features",
            str(bad),
            "--slide",
            str(slide),
            "--out",
            str(tmp_path / "bad.png"),
        ]
    )
    assert rc == 2 and "dimension" in capsys.readouterr().err


def _peaked(coords):
    """Softmax attention concentrated on the patches near the bottom-right corner."""
    d = np.hypot(coords[:, 0] - 1700, coords[:, 1] - 1200)
    a = np.exp(-d / 150.0)
    return a / a.sum()


def test_relative_scale_is_linear_and_one_means_uniform():
    a = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(normalise_attention(a), [0.4, 0.8, 1.2, 1.6])
    np.testing.assert_allclose(normalise_attention(np.full(7, 1 / 7)), np.ones(7))
    with pytest.raises(InputError, match="negative"):
        normalise_attention(np.array([-1.0, 2.0]))
    assert attention_flatness(np.full(100, 0.01)) == pytest.approx(1.0)
    assert attention_flatness(np.r_[1.0, np.zeros(99)]) == pytest.approx(0.0)


def test_flat_attention_warns_and_peaked_does_not(reg_cohort, tmp_path):
    slide = reg_cohort.parent / "slides" / "case000_HE.svs"
    coords = _grid_coords()
    rng = np.random.default_rng(0)
    flat = np.full(len(coords), 1.0 / len(coords)) * (1 + 0.01 * rng.normal(size=len(coords)))
    m_flat = render_attention(slide, coords, flat, 256, thumbnail_max=300, gallery_k=2)
    m_peak = render_attention(slide, coords, _peaked(coords), 256, thumbnail_max=300, gallery_k=2)
    assert m_flat.flat and m_flat.flatness > FLAT_ENTROPY
    assert not m_peak.flat and m_peak.max_relative > 5
    page_flat = attention_report_html([m_flat])
    page_peak = attention_report_html([m_peak])
    assert FLAT_WARNING in page_flat and FLAT_WARNING not in page_peak

    # the figure carries the warning too: a red (#cf222e) banner only on the flat map
    def red_pixels(png: bytes) -> int:
        with Image.open(io.BytesIO(png)) as im:
            rgb = np.asarray(im.convert("RGB")).astype(int)
        return int((np.abs(rgb - [207, 34, 46]).sum(-1) < 30).sum())

    assert red_pixels(m_flat.figure_png) > 500 and red_pixels(m_peak.figure_png) == 0


def test_gallery_reads_the_top_and_bottom_patches(reg_cohort):
    slide = reg_cohort.parent / "slides" / "case000_HE.svs"
    coords = _grid_coords()
    att = _peaked(coords)
    m = render_attention(slide, coords, att, 256, thumbnail_max=300, gallery_k=4, tile_px=64)
    assert len(m.top) == 4 and len(m.bottom) == 4
    assert [t.index for t in m.top] == list(np.argsort(-att, kind="stable")[:4])
    assert min(t.attention for t in m.top) > max(t.attention for t in m.bottom)
    for t in m.top + m.bottom:
        with Image.open(io.BytesIO(t.jpeg)) as im:
            assert im.size == (64, 64)
    page = attention_report_html([m])
    assert page.count("<img src='data:image/jpeg") == 8


def test_batch_cli_writes_one_card_per_slide(reg_cohort, tmp_path, capsys):
    from cscl.features import SlideFeatures, write_features

    feats = tmp_path / "features"
    coords = _grid_coords()
    rng = np.random.default_rng(1)
    ids = ["case000_HE", "case001_HE", "case002_HE"]
    for sid in ids:
        write_features(
            feats / f"{sid}.h5",
            SlideFeatures(
                features=rng.normal(size=(len(coords), 16)).astype(np.float32),
                coords=coords,
                slide_id=sid,
                stain="HE",
                extractor_hash="test",
                encoder="test",
                coord_attrs={"patch_size": 256, "patch_size_level0": 256, "mpp_level0": 0.5},
            ),
        )
    run = _tiny_run(tmp_path / "run", 16)
    out = tmp_path / "report"
    argv = ["heatmap", "--model", str(run), "--features", str(feats), "--slides"]
    argv += [str(reg_cohort.parent / "slides"), "--out", str(out), "--thumbnail-max", "200"]
    assert main(argv + ["--gallery", "2"]) == 0
    page = (out / "index.html").read_text()
    for sid in ids:
        assert (out / f"{sid}.png").exists() and f"href='#s-{sid}'" in page
    assert page.count("<section class='card") == 3
    # mean pooling gives every patch 1/N: each card says the map shows nothing
    assert main(argv[:2] + ["mean-pool"] + argv[3:] + ["--gallery", "0"]) == 0
    assert (out / "index.html").read_text().count(FLAT_WARNING) == 3
    # a slide id not in the slide folder is named
    write_features(
        feats / "nope.h5",
        SlideFeatures(
            features=np.zeros((len(coords), 16), np.float32),
            coords=coords,
            slide_id="nope",
            stain="HE",
            extractor_hash="test",
            encoder="test",
            coord_attrs={"patch_size": 256, "patch_size_level0": 256, "mpp_level0": 0.5},
        ),
    )
    capsys.readouterr()
    assert main(argv) == 2 and "'nope'" in capsys.readouterr().err
