import json
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pytest
from slides import render, write_slide

from cscl.cli import main
from cscl.features import COORD_ATTRS, read_features
from cscl.wsi.dataset import PatchDataset
from cscl.wsi.extract import (
    extract_manifest,
    extract_slide,
    extractor_hash,
    features_in_memory,
)
from cscl.wsi.patching import patch_grid
from cscl.wsi.readers import open_slide
from cscl.wsi.tissue import TissueParams, segment_tissue

CLI = [
    "--backbone",
    "test_resnet",
    "--random-init",
    "--patch-size",
    "64",
    "--batch-size",
    "16",
    "--threads",
    "1",
]


def test_cli_manifest_contract_and_resume(cohort, tmp_path, capsys):
    out = tmp_path / "features"
    rc = main(
        [
            "extract",
            "--manifest",
            str(cohort),
            "--out",
            str(out),
            "--workers",
            "2",
            "--qc-png",
            str(tmp_path / "qc"),
            "--quiet",
            *CLI,
        ]
    )
    assert rc == 0
    assert "4 done, 0 skipped (reused), 0 failed" in capsys.readouterr().out
    files = sorted(p.name for p in out.glob("*.h5"))
    assert files == ["case000_HE.h5", "case000_KI67.h5", "case001_HE.h5", "case001_KI67.h5"]
    assert len(list((tmp_path / "qc").glob("*.png"))) == 4
    with h5py.File(out / "case000_KI67.h5") as f:
        assert f["coords"].dtype == np.int64 and f["coords"].shape[1] == 2
        assert f["features"].shape == (f["coords"].shape[0], 96)
        assert set(COORD_ATTRS) <= set(f["coords"].attrs)  # the contract (docs/CONTRACTS.md)
        assert f["coords"].attrs["patch_size_level0"] == 128
        assert f["features"].attrs["encoder"] == "test_resnet"
        assert f.attrs["stain"] == "KI67" and f.attrs["slide_id"] == "case000_KI67"
        assert bool(f.attrs["random_init"])
        qc = json.loads(f.attrs["qc"])
        assert qc["tissue_area_mm2"] > 0.1 and len(qc["od_mean"]) == 3
        ehash = f.attrs["extractor_hash"]
    summary = json.loads((out / "extract_summary.json").read_text())
    assert summary["n_done"] == 4 and summary["extractor_hash"] == ehash

    mtime = (out / "case000_HE.h5").stat().st_mtime_ns
    rerun = ["extract", "--manifest", str(cohort), "--out", str(out), "--quiet", "--workers", "0"]
    assert main([*rerun, *CLI]) == 0
    assert "0 done, 4 skipped (reused)" in capsys.readouterr().out
    assert (out / "case000_HE.h5").stat().st_mtime_ns == mtime
    # another patch size is another extractor: everything is recomputed
    cli2 = [a if a != "64" else "32" for a in CLI]
    assert main([*rerun, *cli2]) == 0
    assert "4 done" in capsys.readouterr().out
    assert read_features(out / "case000_HE.h5").coord_attrs["patch_size"] == 32


def test_features_equal_naive_loop_and_workers_do_not_change_them(he_slide, cfg, encoder, tmp_path):
    r0 = extract_slide(str(he_slide), tmp_path / "w0", cfg, encoder)
    r2 = extract_slide(str(he_slide), tmp_path / "w2", replace(cfg, num_workers=2), encoder)
    assert r0.status == r2.status == "done" and r0.n_patches > 20
    a, b = read_features(r0.path), read_features(r2.path)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.features, b.features)
    # the same patches read one by one and encoded one by one
    with open_slide(he_slide) as wsi:
        grid = patch_grid(wsi, segment_tissue(wsi, cfg.tissue), 1.0, 64, cfg.min_tissue)
        np.testing.assert_array_equal(grid.coords, a.coords)
        ds = PatchDataset(wsi, grid.coords, grid.level, grid.read_size, 64)
        for i in (0, len(grid) // 2, len(grid) - 1):
            one = encoder(ds[[i]]["images"]).numpy()[0]
            np.testing.assert_allclose(a.features[i], one, rtol=1e-2, atol=1e-2)
        mem = features_in_memory(wsi, cfg, encoder, slide_id="case000_HE")
    np.testing.assert_allclose(mem.features.astype(a.features.dtype), a.features)
    assert mem.extractor_hash == a.extractor_hash and mem.extra["qc"]["mpp"] == 0.5


def test_extractor_hash_tracks_what_decides_features(cfg):
    h = extractor_hash(cfg, "random-seed0")
    assert h == extractor_hash(replace(cfg, batch_size=3, num_workers=5), "random-seed0")
    variants = [
        extractor_hash(cfg, "random-seed1"),
        extractor_hash(cfg, "abc123"),
        extractor_hash(replace(cfg, backbone="resnet18"), "random-seed0"),
        extractor_hash(replace(cfg, target_mpp=0.5), "random-seed0"),
        extractor_hash(replace(cfg, patch_size=32), "random-seed0"),
        extractor_hash(replace(cfg, min_tissue=0.5), "random-seed0"),
        extractor_hash(replace(cfg, tissue=TissueParams(seg_mpp=4.0)), "random-seed0"),
        extractor_hash(replace(cfg, seed=7), "random-seed0"),
    ]
    assert h not in variants and len(set(variants)) == len(variants)


@pytest.fixture
def bad_cohort(cohort, tmp_path):
    """Two good slides plus: not a slide, truncated, blank (no tissue), missing file, no mpp."""
    root = tmp_path / "bad"
    (root / "slides").mkdir(parents=True)
    good = ["case000_HE.svs", "case000_KI67.svs"]
    for name in good:
        shutil.copy(cohort.parent / "slides" / name, root / "slides" / name)
    (root / "slides" / "junk.svs").write_bytes(np.random.default_rng(1).bytes(40_000))
    data = (cohort.parent / "slides" / "case001_HE.svs").read_bytes()
    (root / "slides" / "cut.svs").write_bytes(data[: len(data) // 2])
    write_slide(root / "slides" / "blank.svs", render(512, 512, blank=True), mpp=0.5)
    write_slide(root / "slides" / "nompp.tiff", render(512, 512), mpp=None, fmt="generic")
    names = [*good, "junk.svs", "cut.svs", "blank.svs", "gone.svs", "nompp.tiff"]
    rows = [
        {"case_id": f"c{i}", "stain": "HE", "slide_uri": f"slides/{n}"} for i, n in enumerate(names)
    ]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_batch_goes_on_past_bad_slides(bad_cohort, tmp_path, capsys):
    out = tmp_path / "f"
    rc = main(["extract", "--manifest", str(bad_cohort), "--out", str(out), "--quiet", *CLI])
    assert rc == 1
    cap = capsys.readouterr()
    assert "2 done, 0 skipped (reused), 5 failed" in cap.out
    err = cap.err
    assert "junk.svs is not a slide" in err
    assert "cut.svs" in err
    assert "no tissue found in" in err and "blank.svs" in err
    assert "gone.svs" in err and "not found" in err
    assert "nompp.tiff" in err and "--mpp" in err
    assert sorted(p.name for p in out.glob("*.h5")) == ["case000_HE.h5", "case000_KI67.h5"]
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    summary = json.loads((out / "extract_summary.json").read_text())
    failed = {r["slide_id"]: r["error"] for r in summary["results"] if r["status"] == "failed"}
    assert set(failed) == {"junk", "cut", "blank", "gone", "nompp"}
    # a rerun reuses the good slides and still reports the bad ones
    assert main(["extract", "--manifest", str(bad_cohort), "--out", str(out), "--quiet", *CLI]) == 1
    assert "0 done, 2 skipped (reused), 5 failed" in capsys.readouterr().out


def test_single_slide_with_mpp_override(tmp_path, capsys):
    p = write_slide(tmp_path / "nompp.tiff", render(768, 768, "HER2"), mpp=None, fmt="generic")
    out = tmp_path / "f"
    base = ["extract", "--slide", str(p), "--out", str(out), "--quiet", "--workers", "0", *CLI]
    assert main(base) == 1
    assert "--mpp" in capsys.readouterr().err
    assert main([*base, "--mpp", "0.5", "--stain", "her2", "--slide-id", "x1"]) == 0
    sf = read_features(out / "x1.h5")
    assert sf.stain == "HER2" and sf.coord_attrs["mpp_level0"] == 0.5
    assert json.loads(sf.extra["qc"])["mpp_source"] == "override"


def test_manifest_errors_exit_2(cohort, tmp_path, capsys):
    m = tmp_path / "m.csv"
    pd.DataFrame({"case_id": ["a"], "slide_uri": ["x.svs"]}).to_csv(m, index=False)
    assert main(["extract", "--manifest", str(m), "--out", str(tmp_path / "o"), *CLI]) == 2
    assert "missing column(s) ['stain']" in capsys.readouterr().err
    assert (
        main(
            [
                "extract",
                "--manifest",
                str(cohort),
                "--out",
                str(tmp_path / "o"),
                "--backbone",
                "test_resnet",
            ]
        )
        == 2
    )  # neither weights nor --random-init
    assert "--random-init" in capsys.readouterr().err


def test_extract_manifest_api(cohort, cfg, encoder, tmp_path):
    s = extract_manifest(str(cohort), tmp_path / "o", cfg, encoder=encoder, show_progress=False)
    assert s.ok and len(s.done) == 4 and all(r.n_patches > 0 for r in s.done)


def test_manifest_and_slides_on_s3(he_slide, s3_endpoint, tmp_path, monkeypatch, capsys):
    from cscl.io import storage

    monkeypatch.setenv("CSCL_CACHE_DIR", str(tmp_path / "cache"))
    storage.configure_store(s3_endpoint)
    storage.s3_client().create_bucket(Bucket="cohort")
    storage.upload(he_slide, "s3://cohort/c1/slides/case000_HE.svs")
    manifest = "case_id,stain,slide_uri\ncase000,HE,slides/case000_HE.svs\n"
    storage.write_bytes("s3://cohort/c1/manifest.csv", manifest.encode())
    out = tmp_path / "f"
    argv = [
        "extract",
        "--manifest",
        "s3://cohort/c1/manifest.csv",
        "--out",
        str(out),
        "--s3-endpoint",
        s3_endpoint,
        "--quiet",
        "--workers",
        "0",
        *CLI,
    ]
    assert main(argv) == 0
    assert "1 done" in capsys.readouterr().out
    assert read_features(out / "case000_HE.h5").features.shape[0] > 20


def test_manifest_mpp_column_overrides(tmp_path, capsys):
    write_slide(tmp_path / "nompp.tiff", render(768, 768, "HE"), mpp=None, fmt="generic")
    m = tmp_path / "m.csv"
    pd.DataFrame(
        {"case_id": ["a"], "stain": ["HE"], "slide_uri": ["nompp.tiff"], "mpp": [0.5]}
    ).to_csv(m, index=False)
    out = tmp_path / "f"
    assert main(["extract", "--manifest", str(m), "--out", str(out), "--quiet", *CLI]) == 0
    assert read_features(out / "nompp.h5").coord_attrs["mpp_level0"] == 0.5
