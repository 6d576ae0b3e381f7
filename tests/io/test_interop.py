"""TRIDENT/CLAM interop: their feature folders import with an extractor identity, so a model
trained on them packages and serves; our files load in CLAM's training code path as they are."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cscl.errors import InputError
from cscl.features import SlideFeatures, read_features, write_features
from cscl.interop import export_clam, import_features

sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))

DIM = 32


def _trident_file(path: Path, rng, n=30, dtype=np.float32):
    """A feature file the way TRIDENT writes it (attrs from its patching step, no identity)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rng.normal(size=(n, DIM)).astype(dtype))
        c = f.create_dataset("coords", data=(rng.integers(0, 40, (n, 2)) * 512).astype(np.int64))
        c.attrs.update({"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40,
                        "target_magnification": 20, "level0_width": 30000, "level0_height": 20000,
                        "overlap": 0, "name": path.stem, "savetodir": str(path.parent)})  # fmt: skip
        f["features"].attrs.update({"name": path.stem, "savetodir": str(path.parent)})
    return path


@pytest.fixture
def trident_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "job" / "20x_256px_0px_overlap" / "features_uni_v1"
    for i in range(8):
        _trident_file(d / f"case{i:03d}_HE.h5", rng)
    return d


def test_trident_folder_imports_with_a_derived_identity(trident_dir, tmp_path):
    s = import_features(trident_dir, tmp_path / "imp")
    assert s.source == "trident" and s.encoder == "uni_v1" and len(s.slides) == 8
    assert len(s.extractor_hash) == 16
    sf = read_features(tmp_path / "imp" / "case000_HE.h5")
    assert sf.extractor_hash == s.extractor_hash and sf.encoder == "uni_v1"
    assert sf.features.dtype == np.float32 and sf.stain == "HE"
    ca = sf.coord_attrs
    assert (ca["target_mpp"], ca["mpp_level0"], ca["patch_size"]) == (0.5, 0.25, 256)
    assert ca["patch_size_level0"] == 512 and ca["patch_level"] == 0
    # the identity is a function of the settings: same folder → same hash, other encoder → other
    assert import_features(trident_dir, tmp_path / "again").extractor_hash == s.extractor_hash
    other = import_features(trident_dir, tmp_path / "o", encoder="conch_v15")
    assert other.extractor_hash != s.extractor_hash


def test_mixed_settings_and_missing_facts_are_refused(trident_dir, tmp_path):
    rng = np.random.default_rng(1)
    _trident_file(trident_dir / "odd.h5", rng)
    with h5py.File(trident_dir / "odd.h5", "a") as f:
        f["coords"].attrs["patch_size"] = 512
    with pytest.raises(InputError, match="extracted differently"):
        import_features(trident_dir, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-imported

    clam = tmp_path / "clam" / "h5_files"
    clam.mkdir(parents=True)
    with h5py.File(clam / "s1.h5", "w") as f:  # CLAM: no attrs at all
        f["features"] = rng.normal(size=(5, DIM)).astype(np.float32)
        f["coords"] = np.zeros((5, 2), np.int64)
    with pytest.raises(InputError, match="do not name their patch encoder") as err:
        import_features(clam, tmp_path / "c")
    assert "--encoder" in err.value.hint
    with pytest.raises(InputError, match="patch size and resolution") as err:
        import_features(clam, tmp_path / "c", encoder="resnet50_trunc")
    assert "--target-mpp" in err.value.hint
    s = import_features(
        clam, tmp_path / "c", encoder="resnet50_trunc", target_mpp=0.5, patch_size=256
    )
    assert s.source == "clam" and read_features(tmp_path / "c" / "s1.h5").extractor_hash


def test_model_on_imported_features_packages_and_serves(trident_dir, tmp_path):
    """The reported failure ("does not name its feature files", "come from extractor ''") and
    its fix: train on the imported files, package --features-only, predict."""
    from serving_fixtures import SMALL  # noqa: I001

    from cscl.inference import Predictor
    from cscl.models import create_model
    from cscl.packaging import BundleSpec, build_bundle
    from cscl.train.checkpoint import save_run

    def run_on(fdir: Path, ehash: str, name: str) -> Path:
        torch.manual_seed(0)
        mc = dict(in_dim=DIM, n_stains=1, use_fusion=False, use_stain_embed=False, abmil=SMALL)
        config = {"kind": "cscl", "stage": "slide", "input_dim": DIM, "he_id": 0, "stains": ["HE"],
                  "slide_encoder": {"name": "slide_encoder", "config": mc},
                  "data": {"features_dir": str(fdir), "extractor_hash": ehash,
                           "encoder": "uni_v1", "fingerprint": "t"}}  # fmt: skip
        return save_run(
            tmp_path / name, config, {"slide_encoder": create_model("slide_encoder", **mc)}
        )

    raw = run_on(trident_dir, "", "raw")  # what training on TRIDENT's own files records
    with pytest.raises(InputError, match="does not name its feature files"):
        build_bundle(raw, tmp_path / "b0", BundleSpec(features_only=True))

    s = import_features(trident_dir, tmp_path / "imp")
    run = run_on(tmp_path / "imp", s.extractor_hash, "run")
    with pytest.raises(InputError, match="--features-only"):
        build_bundle(run, tmp_path / "b1", BundleSpec(backbone_weights=None))
    build_bundle(run, tmp_path / "b2", BundleSpec(features_only=True))
    pred = Predictor(tmp_path / "b2", device="cpu")
    out = pred.predict_features(read_features(tmp_path / "imp" / "case003_HE.h5"))
    assert out["n_patches"] == 30 and len(out["embedding"]) > 0
    foreign = read_features(trident_dir / "case003_HE.h5")  # not imported: refused, told how
    with pytest.raises(InputError, match="unknown") as err:
        pred.validate(foreign)
    assert "import-features" in err.value.hint


def test_our_files_load_in_clams_training_path_and_export(tmp_path):
    rng = np.random.default_rng(2)
    sf = SlideFeatures(rng.normal(size=(7, DIM)).astype(np.float32), np.zeros((7, 2), np.int64),
                       "s1", "HE", "abc", "uni", {"patch_size": 224, "target_mpp": 0.5})  # fmt: skip
    path = write_features(tmp_path / "f" / "s1.h5", sf)
    with h5py.File(path, "r") as f:  # CLAM's Generic_MIL_Dataset: torch.from_numpy(features[:])
        x = torch.from_numpy(f["features"][:])
        assert f["coords"].attrs["patch_level"] == 0 and f["coords"].attrs["name"] == "s1"
    torch.nn.Linear(DIM, 2)(x)  # float16 here was CLAM's "Half vs Float" error
    assert export_clam(tmp_path / "f", tmp_path / "clam") == ["s1"]
    pt = torch.load(tmp_path / "clam" / "pt_files" / "s1.pt", weights_only=True)
    assert pt.dtype == torch.float32 and pt.shape == (7, DIM)
    assert read_features(tmp_path / "clam" / "h5_files" / "s1.h5").features.dtype == np.float32
