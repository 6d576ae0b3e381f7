"""tiny_cohort (used by other parts' tests) produces slides OpenSlide opens as Aperio."""

from __future__ import annotations

import openslide
import pandas as pd

from cscl.io.manifest import load_manifest
from cscl.synthetic.testing import tiny_cohort


def test_tiny_cohort_opens_as_aperio(tmp_path):
    manifest = tiny_cohort(tmp_path / "c", n_cases=2, seed=3)
    df = load_manifest(str(manifest))
    assert sorted(df["stain"].unique()) == ["HE", "HER2", "KI67"]
    assert len(df) == 6
    for uri in df["slide_uri"]:
        s = openslide.OpenSlide(uri)
        assert s.properties["openslide.vendor"] == "aperio"
        assert float(s.properties["openslide.mpp-x"]) == 0.5
        assert s.level_count >= 3
        assert s.dimensions == (2000, 1500)
    labels = pd.read_csv(manifest.parent / "labels.csv")
    assert list(labels["case_id"]) == ["case000", "case001"]
    tf = pd.read_csv(manifest.parent / "transforms.csv")
    assert len(tf) == 4
