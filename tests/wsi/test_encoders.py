import hashlib

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

    storage.s3_client(s3_endpoint).create_bucket(Bucket="weights")
    storage.upload(path, "s3://weights/enc/w.pth", s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the process store's default endpoint
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
