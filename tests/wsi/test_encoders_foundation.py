"""Pathology foundation encoders: each published architecture builds (tiny depth/width here —
full ViT-L/H/g are too slow on CPU), loads weights saved in its publisher's key layout, and gives
the publisher's embedding. Full-size specs are checked against the published parameter counts on
the meta device (no memory, no download)."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest
import timm
import torch

from cscl.errors import InputError
from cscl.wsi.encoders import encoder_identity, encoder_spec, list_encoders, load_encoder
from cscl.wsi.encoders.base import resolve_layer

TINY = {"depth": 2, "embed_dim": 96, "num_heads": 4}
# name → (published parameters in millions (±1 %), embedding dim, how the card pools)
PUBLISHED = {
    "uni": (303, 1024, "cls"),  # ViT-L/16
    "uni2-h": (681, 1536, "cls"),  # ViT-H/14 reg8 SwiGLU
    "virchow": (632, 2560, "cls+mean1"),  # ViT-H/14 SwiGLU, cls ⊕ mean(output[:, 1:])
    "virchow2": (632, 2560, "cls+mean5"),  # + 4 registers: mean(output[:, 5:])
    "h-optimus-0": (1135, 1536, "cls"),  # ViT-g/14 reg4
    "h-optimus-1": (1135, 1536, "cls"),
    "prov-gigapath": (1135, 1536, "cls"),  # ViT-g, 16 px patches
    "phikon-v2": (303, 1024, "cls"),  # DINOv2 ViT-L/16 (HF layout)
}


def _tiny(name):
    spec = encoder_spec(name)
    return replace(spec, kwargs={**spec.kwargs, **TINY})


def _timm_model(spec, seed):
    torch.manual_seed(seed)
    return timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.timm_kwargs())


def _hf_dinov2(sd):
    """A timm ViT state dict written the way Hugging Face `Dinov2Model` names it (phikon-v2)."""
    out = {"embeddings.mask_token": torch.zeros(1, sd["cls_token"].shape[-1])}
    top = {
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    inner = {
        "norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.output.dense",
        "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    }  # fmt: skip
    for k, v in sd.items():
        if k in top:
            out[top[k]] = v
            continue
        _, i, rest = k.split(".", 2)
        pre = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for part, t in zip(("query", "key", "value"), v.chunk(3, dim=0), strict=True):
                out[f"{pre}attention.attention.{part}.{kind}"] = t.clone()
        elif rest.startswith("ls"):
            out[f"{pre}layer_scale{rest[2]}.lambda1"] = v
        else:
            mod, kind = rest.rsplit(".", 1)
            out[f"{pre}{inner[mod]}.{kind}"] = v
    return out


def _batch(size=224, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: weights come from files only."""

    def refuse(*a, **k):
        raise AssertionError("an encoder tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_weights_load_and_give_the_published_embedding(name, tmp_path, no_network):
    spec = _tiny(name)
    ref = _timm_model(spec, seed=3).eval()
    sd = ref.state_dict()
    if name == "phikon-v2":
        ckpt = _hf_dinov2(sd)
        assert not any(k.startswith("blocks.") for k in ckpt)
    elif name == "uni":  # a training-checkpoint wrapper with a DDP prefix is unwrapped too
        ckpt = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    else:
        ckpt = sd  # timm keys, as distributed (pytorch_model.bin)
    path = tmp_path / "pytorch_model.bin"
    torch.save(ckpt, path)

    enc = load_encoder(name, weights=path, device="cpu", spec=spec)
    x = _batch()
    got = enc(x)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        tokens = ref.forward_features((x.float() / 255 - mean) / std)
    pooling = PUBLISHED[name][2]
    if pooling == "cls":
        want = tokens[:, 0]
    else:  # the card's recipe, with its literal token offsets
        start = int(pooling.removeprefix("cls+mean"))
        want = torch.cat([tokens[:, 0], tokens[:, start:].mean(1)], dim=-1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert enc.dim == got.shape[1] == (2 if pooling != "cls" else 1) * TINY["embed_dim"]
    assert enc.input_size == 224 and enc.mean == spec.mean and not enc.random_init


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_specs_match_the_published_models(name):
    spec = encoder_spec(name)
    with torch.device("meta"):
        model = timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.timm_kwargs())
    millions, dim, pooling = PUBLISHED[name]
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - millions) / millions < 0.01, (name, n)
    assert model.num_features * (1 if pooling == "cls" else 2) == dim
    json.dumps(spec.identity())  # recordable in feature files and bundles
    assert spec.source


def test_wrong_weights_name_the_mismatch(tmp_path):
    path = tmp_path / "uni.bin"
    torch.save(_timm_model(_tiny("uni2-h"), 0).state_dict(), path)
    with pytest.raises(InputError, match="do not fit backbone 'uni'"):
        load_encoder("uni", weights=path, device="cpu", spec=_tiny("uni"))


def test_conch_is_refused_with_the_reason():
    assert {"conch", "conch-v1.5"} <= set(list_encoders())
    with pytest.raises(InputError, match="no pure-timm build") as err:
        load_encoder("conch-v1.5", allow_random=True)
    assert "import-features" in err.value.hint


def test_timm_name_with_kwargs(tmp_path):
    enc = load_encoder(
        "timm:test_vit?img_size=64&pool=avg&mean=0.5,0.5,0.5&std=0.25,0.25,0.25",
        allow_random=True,
        device="cpu",
    )
    assert enc.input_size == 64 and enc.std == (0.25, 0.25, 0.25)
    assert enc(_batch(64)).shape == (2, enc.dim)
    assert enc.spec.kwargs == {"img_size": 64} and enc.spec.pool == "avg"
    with pytest.raises(InputError, match="unknown timm model"):
        encoder_spec("timm:no_such_model?x=1")
    with pytest.raises(InputError, match="not in timm.layers or torch.nn"):
        resolve_layer("os.system")


def test_spec_is_part_of_the_extractor_identity():
    """Registered foundation encoders hash their spec; legacy names keep their old hash."""
    assert encoder_identity("resnet18") is None and encoder_identity("test_resnet") is None
    ident = encoder_identity("virchow2")
    assert ident["pool"] == "cls+mean" and ident["kwargs"]["reg_tokens"] == 4
    changed = {**ident, "pool": "token"}
    assert encoder_identity("virchow2", json.dumps(changed))["pool"] == "token"


def test_recorded_spec_rebuilds_the_same_encoder(tmp_path):
    """A spec read back from a feature file (JSON) builds the encoder it was recorded from."""
    spec = _tiny("virchow2")
    path = tmp_path / "w.bin"
    torch.save(_timm_model(spec, 1).state_dict(), path)
    a = load_encoder("virchow2", weights=path, device="cpu", spec=spec)
    b = load_encoder("virchow2", weights=path, device="cpu", spec=spec.identity_json())
    x = _batch(seed=5)
    torch.testing.assert_close(a(x), b(x))
    assert b.spec.identity() == spec.identity()


def test_extraction_records_the_spec_and_packaging_carries_it(he_slide, cfg, tmp_path):
    """The spec goes into the feature file and the extractor hash; packaging re-derives the same
    hash from the recorded spec and hands it to serving (bundle preprocessing)."""
    import pandas as pd

    from cscl.features import read_features
    from cscl.packaging import feature_preprocessing
    from cscl.wsi.extract import extract_slides, extractor_hash

    name = "timm:test_vit?img_size=64"
    run = replace(cfg, backbone=name, allow_random=True)
    row = {"slide_uri": str(he_slide), "slide_id": "s", "stain": "HE", "mpp": None}
    summary = extract_slides(pd.DataFrame([row]), tmp_path / "f", run, show_progress=False)
    assert summary.ok, summary.failed
    sf = read_features(tmp_path / "f" / "s.h5")
    recorded = json.loads(sf.extra["encoder_spec"])
    assert recorded == encoder_spec(name).identity() and sf.features.dtype.name == "float32"
    other = replace(run, encoder_spec={**recorded, "pool": "token"})
    assert extractor_hash(other, "random-seed0") != summary.extractor_hash

    backbone, pre = feature_preprocessing(
        tmp_path / "f", summary.extractor_hash, min_tissue=run.min_tissue, tissue=None
    )
    assert pre["encoder_spec"] == recorded and pre["feature_dtype"] == "float32"
    assert backbone["name"] == name and backbone["random_init"]
