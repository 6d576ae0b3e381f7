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
    assert not fusion._single_key_is_exact()  # dropout would drop the single weight
    fusion.eval()
    assert fusion._single_key_is_exact()
    x3 = torch.randn(2, 3, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(fusion(x3), fusion.attend(x3))
    y = fusion(x.requires_grad_())  # gradients flow through the shortcut
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
