"""Builders for the serving tests: a tiny random-init run, feature files, labels, a slide.

Everything is small and seeded: a random-init `test_resnet` backbone (96-d features, 64 px patches
at 1 µm/px), an untrained small slide encoder saved with the public `save_run` API, random feature
files carrying the extractor hash those settings produce (so whole-slide requests in the server
reproduce it), and one synthetic H&E slide.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

LOG_BUCKET = "cscl-logs"
DATA_BUCKET = "cscl-data"
BACKBONE = "test_resnet"
DIM = 96
PATCH = 64
MPP = 1.0
N_CASES = 16
SMALL = dict(hidden=32, n_heads=2, head_dim=16, attn_hidden=16, embed_dim=16, token_dim=8)


def extract_config():
    from cscl.wsi.extract import ExtractConfig

    return ExtractConfig(
        backbone=BACKBONE, allow_random=True, patch_size=PATCH, target_mpp=MPP, num_workers=0,
        precision="fp32",  # the fixture's feature files carry no precision: fp32 by contract
    )  # fmt: skip


def ehash() -> str:
    from cscl.wsi.extract import extractor_hash

    return extractor_hash(extract_config(), "random-seed0")


def qc(rng) -> dict:
    return {
        "tissue_area_mm2": float(rng.uniform(0.2, 0.6)),
        "mpp": 0.5,
        "od_mean": [float(v) for v in rng.uniform(0.05, 0.3, 3)],
        "od_std": [float(v) for v in rng.uniform(0.01, 0.06, 3)],
        "vendor": "aperio",
    }


def feature_file(path: Path, slide_id: str, rng, *, n=40, dim=DIM, hash_=None, stain="HE"):
    from cscl.features import SlideFeatures, write_features

    sf = SlideFeatures(
        features=rng.normal(size=(n, dim)).astype(np.float32),
        coords=(rng.integers(0, 30, size=(n, 2)) * 128).astype(np.int64),
        slide_id=slide_id,
        stain=stain,
        extractor_hash=ehash() if hash_ is None else hash_,
        encoder=BACKBONE,
        coord_attrs={
            "patch_size": PATCH,
            "patch_size_level0": 128,
            "target_mpp": MPP,
            "mpp_level0": 0.5,
            "level0_width": 4000,
            "level0_height": 4000,
        },  # fmt: skip
        extra={"random_init": True, "qc": qc(rng)},
    )
    return write_features(path, sf)


def tiny_run(root: Path) -> dict:
    """run dir, features dir, labels.csv, embeddings.parquet under `root`."""
    import torch

    from cscl.embeddings import write_embeddings
    from cscl.features import read_features
    from cscl.models import create_model
    from cscl.train.checkpoint import load_trained, save_run

    rng = np.random.default_rng(0)
    fdir = root / "features"
    ids = [f"case{i:03d}" for i in range(N_CASES)]
    for cid in ids:
        feature_file(fdir / f"{cid}_HE.h5", f"{cid}_HE", rng)
    torch.manual_seed(0)
    mc = dict(in_dim=DIM, n_stains=3, use_fusion=True, use_stain_embed=True, stain_embed_dim=8,
              fusion_heads=2, abmil=SMALL)  # fmt: skip
    enc = create_model("slide_encoder", **mc)
    config = {
        "kind": "cscl",
        "stage": "slide",
        "input_dim": DIM,
        "he_id": 0,
        "stains": ["HE", "HER2", "KI67"],
        "slide_encoder": {"name": "slide_encoder", "config": mc},
        "data": {
            "features_dir": str(fdir),
            "extractor_hash": ehash(),
            "encoder": BACKBONE,
            "fingerprint": "test-fingerprint",
        },  # fmt: skip
    }
    run = save_run(root / "run", config, {"slide_encoder": enc})
    model = load_trained(run)
    X = np.stack(
        [model.embed(read_features(fdir / f"{c}_HE.h5").features.astype(np.float32))[0]
         for c in ids]
    )  # fmt: skip
    meta = pd.DataFrame({"case_id": ids, "slide_id": [f"{c}_HE" for c in ids], "stain": "HE",
                         "model_version": model.model_version})  # fmt: skip
    emb = write_embeddings(root / "embeddings.parquet", meta, X)
    lab = pd.DataFrame(
        {
            "case_id": ids,
            "er_status": ["positive", "negative"] * (N_CASES // 2),
            "subtype": ["LumA", "LumB", "HER2+", "TNBC"] * (N_CASES // 4),
            "os_time": rng.uniform(5, 100, N_CASES).round(1),
            "os_event": [1, 0, 1, 1] * (N_CASES // 4),
        }
    )
    lab.to_csv(root / "labels.csv", index=False)
    return {"run": run, "features": fdir, "labels": root / "labels.csv", "embeddings": emb}


def tiny_slide(root: Path, *, blank: bool = False) -> Path:
    """One synthetic H&E slide (Aperio .svs, 0.5 µm/px, 1024×768)."""
    from cscl.synthetic.testing import tiny_cohort

    m = tiny_cohort(root, n_cases=1, seed=5, stains=("HE",), width=1024, height=768)
    df = pd.read_csv(m)
    return (m.parent / df["slide_uri"].iloc[0]).resolve()


def package(tmp: Path, made: dict, name="cscl", version="0.1.0+test", extra=()) -> dict:
    """Run `cscl package` through the CLI entry point; returns bundle dir and .mar path."""
    from cscl.cli import main

    out = tmp / "models"
    argv = ["package", "--model", str(made["run"]), "--out", str(out), "--labels",
            str(made["labels"]), "--embeddings", str(made["embeddings"]), "--tasks",
            "er_status,subtype,os", "--name", name, "--version", version, "--n-iter", "2",
            "--max-batch-delay", "20", *extra]  # fmt: skip
    assert main(argv) == 0
    return {"bundle": out / name, "mar": out / f"{name}.mar", "store": out,
            "meta": json.loads((out / name / "bundle.json").read_text())}  # fmt: skip
