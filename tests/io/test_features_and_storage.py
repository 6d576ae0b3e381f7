import numpy as np
import pytest

from cscl.embeddings import read_embeddings, write_embeddings
from cscl.errors import InputError, StorageError
from cscl.features import SlideFeatures, read_features, read_reuse_key, write_features
from cscl.io import storage


def test_feature_roundtrip_and_contract_attrs(tmp_path):
    sf = SlideFeatures(
        features=np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32),
        coords=np.arange(10).reshape(5, 2),
        slide_id="c1_HE",
        stain="HE",
        extractor_hash="abc",
        encoder="resnet18",
        coord_attrs={
            "patch_size": 224,
            "patch_size_level0": 448,
            "mpp_level0": 0.5,
            "target_mpp": 1.0,
        },
        extra={"random_init": True, "qc": {"tissue_area_mm2": 1.5}},
    )
    p = write_features(tmp_path / "c1_HE.h5", sf)
    back = read_features(p)
    assert back.features.shape == (5, 8) and back.coords.dtype == np.int64
    assert back.coord_attrs["patch_size_level0"] == 448
    assert np.isnan(back.coord_attrs["level0_magnification"])
    assert back.extra["random_init"]
    assert read_reuse_key(p)[0] == "abc"
    assert not list(tmp_path.glob("*.part"))


def test_not_a_feature_file(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="x.h5"):
        read_features(p)
    assert read_reuse_key(p) == (None, None)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), storage.atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_embeddings_roundtrip(tmp_path):
    import pandas as pd

    meta = pd.DataFrame(
        {"case_id": ["a", "b"], "slide_id": ["a_HE", "b_HE"], "stain": "HE", "model_version": "v1"}
    )
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_embeddings(tmp_path / "e.parquet", meta, X)
    m2, X2 = read_embeddings(tmp_path / "e.parquet")
    assert list(m2["case_id"]) == ["a", "b"] and np.array_equal(X, X2)


def test_missing_local_file_error(tmp_path):
    with pytest.raises(StorageError, match="not found"):
        storage.stat(str(tmp_path / "nope.svs"))


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    with storage.atomic_path(tmp_path / "f.bin") as tmp:
        tmp.write_bytes(b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o666 & ~mask


def test_package_reference_set_leaves_out_bad_feature_files_by_name(tmp_path):
    """One truncated or missing .h5 no longer stops `cscl package` (or drops every slide's QC)."""
    from cscl.packaging import qc_records

    for sid in ("a", "b", "c"):
        sf = SlideFeatures(np.ones((2, 3), np.float32), np.zeros((2, 2), np.int64), sid, "HE",
                           "h", "e", extra={"qc": {"tissue_area_mm2": 1.0}})  # fmt: skip
        write_features(tmp_path / f"{sid}.h5", sf)
    data = (tmp_path / "b.h5").read_bytes()
    (tmp_path / "b.h5").write_bytes(data[: len(data) // 3])
    qcs, failed = qc_records(tmp_path, ["a", "b", "c", "d"])
    assert [q is not None for q in qcs] == [True, False, True, False]
    assert failed[0].startswith("b (") and "truncated" in failed[0]
    assert failed[1].startswith("d (no feature file")
