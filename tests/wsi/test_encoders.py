import hashlib

import pandas as pd
import pytest
import timm
import torch

from cscl.errors import InputError
from cscl.wsi.encoders import load_encoder


def _batch(seed=0, n=2, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_weights_required_unless_random():
    with pytest.raises(InputError, match="--weights") as err:
        load_encoder("test_resnet")
    assert "--random-init" in str(err.value)


def test_random_init_is_seeded():
    a = load_encoder("test_resnet", allow_random=True, seed=0, device="cpu")
    b = load_encoder("test_resnet", allow_random=True, seed=0, device="cpu")
    c = load_encoder("test_resnet", allow_random=True, seed=1, device="cpu")
    x = _batch()
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))
    assert a.random_init and a.weights_digest == "random-seed0" != c.weights_digest
    assert not a.model.training and a.dim == a.model.num_features == a(x).shape[1]


def test_normalisation_from_timm_pretrained_config():
    enc = load_encoder("resnet18", allow_random=True, device="cpu")
    assert enc.mean == pytest.approx((0.485, 0.456, 0.406))
    assert enc.std == pytest.approx((0.229, 0.224, 0.225))
    x = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    y = enc.prepare(x)
    assert y[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)


def test_normalisation_constants_are_built_once_per_device():
    """Building mean/std with torch.tensor(..., device=cuda) per batch is a blocking copy (a GPU
    sync per batch): they are made once per device and reused, in and out of inference mode."""
    enc = load_encoder("resnet18", allow_random=True, device="cpu")
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    first = enc.normalisation(torch.device("cpu"))
    y1, y2 = enc.prepare(x), enc(x)  # prepare outside, __call__ inside inference mode
    assert enc.normalisation(torch.device("cpu"))[0] is first[0] and len(enc._norm) == 1
    assert not first[0].is_inference() and y1.shape == (2, 3, 16, 16) and y2.shape[0] == 2
    expected = (x.float() / 255 - torch.tensor(enc.mean).view(1, 3, 1, 1)) / torch.tensor(
        enc.std
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(y1, expected)


def test_weights_from_file_and_s3(tmp_path, s3_endpoint, monkeypatch):
    from cscl.io import storage

    monkeypatch.setenv("CSCL_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(123)
    ref = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    path = tmp_path / "w.pth"
    torch.save({"state_dict": ref.state_dict()}, path)  # classifier keys are ignored
    enc = load_encoder("test_resnet", weights=path, device="cpu")
    ref.reset_classifier(0)
    x = _batch(1)
    expected = ref((x.float() / 255 - 0.5) / 0.5)  # test_resnet's config: mean = std = 0.5
    torch.testing.assert_close(enc(x), expected, rtol=1e-4, atol=1e-4)
    assert enc.weights_digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not enc.random_init

    storage.configure_store(s3_endpoint)
    storage.s3_client().create_bucket(Bucket="weights")
    storage.upload(path, "s3://weights/enc/w.pth")
    enc2 = load_encoder("test_resnet", weights="s3://weights/enc/w.pth")
    assert enc2.weights_digest == enc.weights_digest
    torch.testing.assert_close(enc2(x).cpu(), enc(x))


def test_mismatched_or_bad_weights(tmp_path):
    p = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), p)
    with pytest.raises(InputError, match="do not fit backbone 'test_resnet'"):
        load_encoder("test_resnet", weights=p)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot load weights .*junk.pth"):
        load_encoder("test_resnet", weights=junk)
    with pytest.raises(InputError, match="weights file not found"):
        load_encoder("test_resnet", weights=tmp_path / "missing.pth")
    with pytest.raises(InputError, match="unknown timm backbone"):
        load_encoder("no_such_model_xyz", allow_random=True)


def test_fixed_size_vit_gets_resized_patches():
    enc = load_encoder("test_vit", allow_random=True, device="cpu")
    assert enc.input_size == 160  # timm's config says fixed input size
    assert enc(_batch(size=64)).shape == (2, enc.dim)


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(InputError, match="no CUDA GPU"):
        load_encoder("test_resnet", allow_random=True, device="cuda")


@pytest.fixture
def registry_guard():
    """Encoders registered by a test are removed again (the registry is process-wide)."""
    from cscl.wsi.encoders import registry

    before = set(registry._ENCODERS)
    yield
    for name in set(registry._ENCODERS) - before:
        registry._ENCODERS.pop(name)


def test_resnet18_is_a_registered_encoder_and_keeps_its_hash_inputs():
    from cscl.wsi.encoders import IMAGENET_MEAN, encoder_spec, list_encoders

    assert "resnet18" in list_encoders()
    spec = encoder_spec("resnet18")
    assert spec.arch == "resnet18" and spec.mean == IMAGENET_MEAN
    # an unregistered timm name still works, with timm's normalisation
    assert encoder_spec("test_resnet").arch == "test_resnet"


def test_a_registered_encoder_plugs_into_extraction(registry_guard, he_slide, cfg, tmp_path):
    """A UNI-style ViT (LayerScale, class token, own mean/std, foreign checkpoint keys) is one
    decorated function; extraction finds it by name."""
    from dataclasses import replace

    from cscl.features import read_features
    from cscl.wsi.encoders import EncoderSpec, register_encoder
    from cscl.wsi.extract import extract_slides

    mean, std = (0.70, 0.60, 0.75), (0.15, 0.20, 0.15)

    @register_encoder("tiny_uni")
    def tiny_uni() -> EncoderSpec:
        return EncoderSpec(
            arch="test_vit",
            kwargs={"img_size": 64, "init_values": 1e-5},  # LayerScale, like UNI
            pool="token",
            mean=mean,
            std=std,
            input_size=64,
            remap=lambda sd: {k.removeprefix("trunk."): v for k, v in sd.items()},
        )

    with pytest.raises(ValueError, match="registered twice"):
        register_encoder("tiny_uni")(lambda: None)
    torch.manual_seed(7)
    ref = timm.create_model("test_vit", num_classes=0, img_size=64, init_values=1e-5).eval()
    path = tmp_path / "tiny_uni.pth"
    torch.save({"trunk." + k: v for k, v in ref.state_dict().items()}, path)

    enc = load_encoder("tiny_uni", weights=path, device="cpu")
    assert (enc.mean, enc.std, enc.input_size, enc.dim) == (mean, std, 64, ref.num_features)
    x = _batch(3, size=96)  # resized to the fixed input size
    xs = torch.nn.functional.interpolate(
        x.float() / 255, size=(64, 64), mode="bilinear", antialias=True
    )
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(enc(x), ref((xs - m) / s), rtol=1e-4, atol=1e-4)

    run = replace(cfg, backbone="tiny_uni", weights=str(path), allow_random=False)
    row = {"slide_uri": str(he_slide), "slide_id": "s", "stain": "HE", "mpp": None}
    summary = extract_slides(pd.DataFrame([row]), tmp_path / "f", run, show_progress=False)
    assert summary.ok, summary.failed
    sf = read_features(tmp_path / "f" / "s.h5")
    assert sf.encoder == "tiny_uni" and sf.features.shape[1] == ref.num_features
