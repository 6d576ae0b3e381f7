"""Realism: the same pretrain → embed path on features extracted from real synthetic slides
(cscl.synthetic tiny_cohort → OpenSlide → tiny random-init backbone → HDF5), with the true
transforms as the registration table."""

from __future__ import annotations

import pytest

from cscl.cli import main
from cscl.embeddings import read_embeddings


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    testing = pytest.importorskip("cscl.synthetic.testing")
    extract = pytest.importorskip("cscl.wsi.extract")
    root = tmp_path_factory.mktemp("real")
    manifest = testing.tiny_cohort(root / "cohort", n_cases=3, seed=0)
    cfg = extract.ExtractConfig(backbone="test_resnet", allow_random=True, patch_size=64,
                                target_mpp=1.0, batch_size=32, num_workers=0)  # fmt: skip
    summary = extract.extract_manifest(str(manifest), root / "features", cfg, show_progress=False)
    assert not [r for r in summary.results if r.status == "failed"], summary
    return manifest, root / "features"


def test_pretrain_and_embed_on_extracted_features(extracted, tmp_path):
    manifest, fdir = extracted
    common = ["--features", str(fdir), "--manifest", str(manifest), "--quiet"]
    reg = ["--registration", str(manifest.parent / "transforms.csv")]
    assert main(["pretrain", *common, "--stage", "adapter", "--out", str(tmp_path / "a"), *reg,
                 "--epochs", "1", "--pairs-per-case", "32"]) == 0  # fmt: skip
    assert main(["pretrain", *common, "--stage", "slide", "--adapter", str(tmp_path / "a"), *reg,
                 "--out", str(tmp_path / "s"), "--epochs", "1", "--tokens", "32", "--small",
                 "--batch-size", "4", "--rankme-after", "1"]) == 0  # fmt: skip
    out = tmp_path / "e.parquet"
    assert main(["embed", "--model", str(tmp_path / "s"), *common, "--out", str(out)]) == 0
    meta, X = read_embeddings(out)
    assert len(meta) == 3 and X.shape[1] == 64
