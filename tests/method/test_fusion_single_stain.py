"""One stain: fusion without attention equals the attention path (softmax over one key is 1)."""

import pytest
import torch

from cscl.models.fusion import CrossStainFusion


@pytest.mark.parametrize("dim,heads", [(64, 8), (48, 8), (10, 3)])
def test_single_stain_shortcut_equals_attention(dim, heads):
    torch.manual_seed(0)
    fusion = CrossStainFusion(dim, heads).eval()
    with torch.no_grad():  # non-trivial norm and biases, so every term is exercised
        fusion.norm.weight.normal_()
        fusion.norm.bias.normal_()
        fusion.attn.in_proj_bias.normal_()
        fusion.attn.out_proj.bias.normal_()
    x = torch.randn(3, 1, 37, dim)
    valid = torch.rand(3, 1, 37) > 0.3  # invalid (padding) tokens attend to themselves too
    with torch.no_grad():
        fast = fusion(x, valid)
        slow = fusion.attend(x, valid)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-6)
    assert not torch.equal(fast, x)  # the shortcut really adds the attention output


def test_several_stains_and_training_dropout_use_attention():
    torch.manual_seed(1)
    fusion = CrossStainFusion(32, 4, dropout=0.5)
    x = torch.randn(2, 1, 5, 32)
    fusion.train()
    assert not fusion.single_key_is_exact()  # dropout would drop the single weight
    fusion.eval()
    assert fusion.single_key_is_exact()
    x3 = torch.randn(2, 3, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(fusion(x3), fusion.attend(x3))
    y = fusion(x.requires_grad_())  # gradients flow through the shortcut
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _encoder(abmil: dict) -> "SlideEncoder":  # noqa: F821
    from cscl.models import create_model

    torch.manual_seed(2)
    enc = create_model(
        "slide_encoder", in_dim=24, n_stains=5, use_fusion=True, use_stain_embed=True,
        abmil=abmil, fusion_heads=4,
    )  # fmt: skip
    with torch.no_grad():  # non-trivial biases and norm, so every folded term is exercised
        enc.fusion.norm.weight.normal_()
        enc.fusion.norm.bias.normal_()
        enc.fusion.attn.in_proj_bias.normal_()
        enc.fusion.attn.out_proj.bias.normal_()
    return enc.eval()


def _attention_path(enc, x, mask, he_id):
    """encode_he through the general attention path (what the fold must reproduce)."""
    h = enc.tokens_in(x[:, None], torch.tensor([he_id]))
    valid = torch.ones(h.shape[:3], dtype=torch.bool) if mask is None else mask[:, None]
    h = enc.fusion.attend(h, valid)
    slide, _, attn = enc.abmil(h[:, 0], valid[:, 0])
    return slide, attn


SMALL = dict(hidden=16, n_heads=2, head_dim=8, attn_hidden=8, embed_dim=12, token_dim=4)


@pytest.mark.parametrize("he_id", [0, 3])
def test_folded_inference_equals_attention_path(he_id):
    enc = _encoder(SMALL)
    x = torch.randn(3, 41, 24)
    mask = torch.rand(3, 41) > 0.3
    with torch.no_grad():
        assert enc._foldable()
        for m in (None, mask):
            fast = enc.encode_he(x, m, he_id)
            slow = _attention_path(enc, x, m, he_id)
            for a, b in zip(fast, slow, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fold_follows_weight_changes_and_stays_out_of_training():
    enc = _encoder(SMALL)
    x = torch.randn(1, 30, 24)
    with torch.no_grad():
        before = enc.encode_he(x)[0].clone()
    enc.train()
    assert not enc._foldable()  # training: autograd through the real layers
    opt = torch.optim.SGD(enc.parameters(), lr=0.5)
    enc.encode_he(x)[0].pow(2).sum().backward()
    opt.step()
    enc.eval()
    with torch.no_grad():
        after = enc.encode_he(x)[0]
        torch.testing.assert_close(after, _attention_path(enc, x, None, 0)[0], rtol=1e-5, atol=1e-6)
        enc.load_state_dict(_encoder(SMALL).state_dict())  # in-place copy: new weights again
        torch.testing.assert_close(enc.encode_he(x)[0], before, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after, before)
    assert not any("fold" in k for k in enc.state_dict())
    assert enc._foldable() is False  # grad enabled outside no_grad: the plain path


def test_mean_skip_is_not_folded():
    enc = _encoder({**SMALL, "mean_skip": True})
    with torch.no_grad():
        assert not enc._foldable()
