"""Uploaded feature files are parsed in memory (h5py over BytesIO), never written to disk."""

from __future__ import annotations

import io

import numpy as np
import pytest

from cscl import inference
from cscl.errors import InputError
from cscl.features import read_features
from cscl.inference_request import HDF5_MAGIC, Request


@pytest.fixture(scope="module")
def predictor(packaged):
    return inference.Predictor(packaged["bundle"])


def test_upload_needs_no_temporary_file(predictor, made, monkeypatch):
    path = made["features"] / "case002_HE.h5"

    def no_disk(*a, **k):
        raise AssertionError("an upload must not go through a temporary file")

    monkeypatch.setattr(inference.tempfile, "TemporaryDirectory", no_disk)
    sf = predictor.request_features(Request("upload", data=path.read_bytes()))
    on_disk = read_features(path)
    np.testing.assert_array_equal(sf.features, on_disk.features)
    np.testing.assert_array_equal(sf.coords, on_disk.coords)
    assert (sf.slide_id, sf.extractor_hash) == (on_disk.slide_id, on_disk.extractor_hash)
    with pytest.raises(InputError, match="the uploaded file") as ei:
        predictor.request_features(Request("upload", data=HDF5_MAGIC + b"\0" * 64))
    assert "upload.h5" not in str(ei.value)


def test_read_features_from_a_file_object_names_it(tmp_path):
    with pytest.raises(InputError, match="cannot read feature file sent.h5"):
        read_features(io.BytesIO(b"not hdf5"), name="sent.h5")
