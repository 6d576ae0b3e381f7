"""The default model version: cscl's version + a hash of the run's weights, never a git commit."""

from __future__ import annotations

import shutil

import pytest
import torch

from cscl import __version__
from cscl.errors import InputError
from cscl.packaging import default_version
from cscl.train.checkpoint import save_run


def _run(path, seed: int):
    torch.manual_seed(seed)
    return save_run(path, {"kind": "test"}, {"head": torch.nn.Linear(4, 2)})


def test_same_weights_same_version_anywhere(tmp_path, monkeypatch):
    run = _run(tmp_path / "a", 0)
    v = default_version(run)
    assert v.startswith(f"{__version__}+") and len(v.split("+")[1]) == 12
    copy = shutil.copytree(run, tmp_path / "elsewhere" / "copy")
    monkeypatch.chdir(tmp_path)  # not a git checkout: the caller's directory plays no part
    assert default_version(copy) == v == default_version(run)


def test_new_weights_new_version(tmp_path):
    assert default_version(_run(tmp_path / "a", 0)) != default_version(_run(tmp_path / "b", 1))


def test_missing_weights_file_is_an_input_error(tmp_path):
    run = _run(tmp_path / "a", 0)
    (run / "head.pt").unlink()
    with pytest.raises(InputError, match="lacks head.pt"):
        default_version(run)
