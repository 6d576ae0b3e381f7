"""A rerun reuses a feature file only if it comes from the same slide bytes (size + ETag/mtime):
a slide replaced under the same name is extracted again, never served from old features."""

from __future__ import annotations

import os

import h5py
import numpy as np
from slides import render, write_slide

from cscl.features import read_features
from cscl.wsi.extract import extract_slide


def test_a_replaced_slide_is_extracted_again(tmp_path, cfg, encoder):
    path = tmp_path / "slides" / "case.svs"
    path.parent.mkdir()
    write_slide(path, render(768, 768, "HE", seed=1), mpp=0.5, fmt="aperio")
    out = tmp_path / "features"
    first = extract_slide(str(path), out, cfg, encoder)
    assert first.status == "done", first.error
    assert extract_slide(str(path), out, cfg, encoder).status == "skipped"  # same bytes: reused
    before = read_features(first.path).features

    write_slide(path, render(768, 768, "HE", seed=7), mpp=0.5, fmt="aperio")  # another slide
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # a later copy
    again = extract_slide(str(path), out, cfg, encoder)
    assert again.status == "done", "a replaced slide must not reuse its predecessor's features"
    assert not np.array_equal(read_features(again.path).features, before)


def test_files_written_before_the_source_attr_are_still_reused(tmp_path, cfg, encoder, he_slide):
    out = tmp_path / "features"
    res = extract_slide(str(he_slide), out, cfg, encoder)
    assert res.status == "done", res.error
    with h5py.File(res.path, "a") as f:  # what an older cscl wrote
        assert "source" in f.attrs
        del f.attrs["source"]
    assert extract_slide(str(he_slide), out, cfg, encoder).status == "skipped"
