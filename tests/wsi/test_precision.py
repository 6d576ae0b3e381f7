"""Precision of extraction: recorded in the extractor hash (only when not fp32) and in the file."""

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from cscl.features import read_features
from cscl.wsi import extract as ex
from cscl.wsi.extract import effective_precision, extract_slide, extractor_hash


def test_fp32_hash_is_the_hash_before_precision_existed(cfg):
    """Feature files written before precision was hashed were fp32: their hash stays valid."""
    fp32 = replace(cfg, precision="fp32")
    legacy = ex.hashlib.sha256(
        ex.json.dumps(fp32.hashed("random-seed0"), sort_keys=True).encode()
    ).hexdigest()[:16]
    assert "precision" not in fp32.hashed("random-seed0")
    assert extractor_hash(fp32, "random-seed0", "cpu") == legacy
    assert extractor_hash(replace(cfg, precision="bf16"), "random-seed0", "cpu") != legacy


def test_auto_precision_follows_the_device(cfg, monkeypatch):
    assert effective_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(ex, "cpu_has_native_bf16", lambda: False)
    assert effective_precision("auto", "cpu") == "fp32"
    assert extractor_hash(cfg, "d", "cpu") == extractor_hash(replace(cfg, precision="fp32"), "d")
    # a CUDA run (bf16) and a CPU fp32 run used to share a hash; not any more
    assert extractor_hash(cfg, "d", "cuda") != extractor_hash(cfg, "d", "cpu")
    monkeypatch.setattr(ex, "cpu_has_native_bf16", lambda: True)
    assert effective_precision("auto", "cpu") == "bf16"
    assert extractor_hash(cfg, "d", "cuda") == extractor_hash(cfg, "d", "cpu")
    with pytest.raises(ex.InputError, match="unknown precision"):
        effective_precision("fp16", "cpu")


def test_bf16_features_are_close_to_fp32_and_recorded(he_slide, cfg, encoder, tmp_path):
    r32 = extract_slide(str(he_slide), tmp_path / "a", replace(cfg, precision="fp32"), encoder)
    r16 = extract_slide(str(he_slide), tmp_path / "b", replace(cfg, precision="bf16"), encoder)
    assert r32.status == r16.status == "done", (r32.error, r16.error)
    f32, f16 = read_features(r32.path), read_features(r16.path)
    assert f32.extra["precision"] == "fp32" and f16.extra["precision"] == "bf16"
    assert f32.extractor_hash != f16.extractor_hash
    a, b = f32.features.astype(np.float32), f16.features.astype(np.float32)
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert 0 < rel < 0.05  # bf16 really ran, and stays close
    assert encoder.channels_last  # the CNN was switched to NHWC for bf16
    # fp32 after the switch is still plain fp32 arithmetic: same features as before it
    r32b = extract_slide(str(he_slide), tmp_path / "c", replace(cfg, precision="fp32"), encoder)
    np.testing.assert_allclose(read_features(r32b.path).features, f32.features, atol=2e-3)


def test_import_cscl_makes_idle_openmp_threads_sleep():
    """OMP_WAIT_POLICY must be set before torch loads; `import cscl` does it, the user's wins."""
    code = (
        "import cscl, os, sys; print(os.environ['OMP_WAIT_POLICY']); print('torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["PASSIVE", "False"], out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split()[0] == "ACTIVE"


def test_prepare_run_sets_the_layout_before_the_first_slide(cfg):
    """Layout conversion is per run, not inside the first slide's timing."""
    from cscl.wsi.encoders import load_encoder

    for precision, nhwc in (("fp32", False), ("bf16", True)):
        enc = load_encoder("test_resnet", allow_random=True, device="cpu", seed=0)
        ex.prepare_run(replace(cfg, precision=precision), enc)
        assert enc.channels_last is nhwc
        first = next(p for p in enc.model.parameters() if p.ndim == 4)
        assert first.is_contiguous(memory_format=ex.torch.channels_last) is nhwc
