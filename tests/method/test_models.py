"""Shapes, stain codes (batch-major), ABMIL masking, fusion H&E-only path, registry."""

from __future__ import annotations

import pytest
import torch

from cscl.errors import InputError
from cscl.models import create_model, list_models
from cscl.models.slide_encoder import stain_codes

TINY_ABMIL = dict(hidden=32, n_heads=2, head_dim=16, attn_hidden=16, embed_dim=24, token_dim=8)


def _enc(**kw):
    cfg = dict(in_dim=16, n_stains=3, stain_embed_dim=8, abmil=TINY_ABMIL)
    cfg.update(kw)
    return create_model("slide_encoder", **cfg).eval()


def test_registry_and_unknown_name():
    assert {"patch_adapter", "gated_abmil", "cross_stain_fusion", "slide_encoder"} <= set(
        list_models()
    )
    with pytest.raises(InputError, match="unknown model"):
        create_model("nope")


def test_adapter_shapes_and_residual():
    torch.manual_seed(0)
    x = torch.randn(5, 16)
    plain = create_model("patch_adapter", dim=16, scales=["10x", "5x"])
    y = plain(x, "5x")
    assert y.shape == (5, 16) and (y >= 0).all()  # final ReLU
    res = create_model("patch_adapter", dim=16, residual=True, alpha=0.2)
    torch.testing.assert_close(res(x), x + 0.2 * res.adapters["10x"].net(x))


def test_abmil_shapes_and_padding_is_ignored():
    torch.manual_seed(0)
    m = create_model("gated_abmil", in_dim=16, **TINY_ABMIL).eval()
    x = torch.randn(2, 7, 16)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    slide, tokens, attn = m(x, mask)
    assert slide.shape == (2, 24) and tokens.shape == (2, 7, 8) and attn.shape == (2, 7)
    torch.testing.assert_close(attn.sum(1), torch.ones(2))
    assert (attn[1, 4:] == 0).all()
    alone, _, _ = m(x[1:, :4])  # padding must not change the slide embedding
    torch.testing.assert_close(slide[1], alone[0], atol=1e-5, rtol=1e-5)


def test_stain_codes_are_batch_major():
    B, S, P = 3, 4, 5
    ids = torch.tensor([0, 2, 1, 3])
    codes = stain_codes(B, S, P, ids)
    block = torch.arange(B * S * P).view(B, S, P)  # flat position of token (b, s, p)
    for b in range(B):
        for s in range(S):
            for p in range(P):
                assert codes[block[b, s, p]] == ids[s]
    # and the encoder concatenates the code of its own stain to every token
    enc = _enc(n_stains=4)
    x = torch.randn(B, S, P, 16)
    h = enc.tokens_in(x, ids)
    for s in range(S):
        want = enc.stain_embed.weight[ids[s]]
        torch.testing.assert_close(h[:, s, :, 16:], want.expand(B, P, -1))


def test_slide_encoder_shapes_with_missing_stain():
    torch.manual_seed(0)
    enc = _enc()
    x = torch.randn(2, 3, 6, 16)
    valid = torch.ones(2, 3, 6, dtype=torch.bool)
    valid[1, 2] = False  # case 1 has no third stain
    out = enc(x, valid)
    assert out["slide"].shape == (2, 3, 24)
    assert torch.isfinite(out["slide"]).all()


def test_fusion_he_only_matches_training_path():
    """Training with every IHC stain dropped from fusion == inference on H&E alone."""
    torch.manual_seed(0)
    enc = _enc()
    x = torch.randn(2, 3, 6, 16)
    valid = torch.ones(2, 3, 6, dtype=torch.bool)
    fusion_valid = valid.clone()
    fusion_valid[:, 1:] = False
    train_path = enc(x, valid, fusion_valid=fusion_valid)["slide"][:, 0]
    infer, attn = enc.encode_he(x[:, 0])
    torch.testing.assert_close(train_path, infer, atol=1e-5, rtol=1e-5)
    # and fusion matters when IHC is visible (otherwise the test above would be vacuous)
    fused = enc(x, valid)["slide"][:, 0]
    assert not torch.allclose(fused, infer, atol=1e-4)


def test_fusion_heads_divide_dim():
    f = create_model("cross_stain_fusion", dim=20, n_heads=8)
    assert 20 % f.n_heads == 0


def _branch_outputs(branch: str, x, valid, enc):
    from cscl.train.stage2 import SlideConfig, slide_outputs

    cfg = SlideConfig(he_query_branch=branch, stain_dropout=0.0, drop_all_ihc=0.0)
    return slide_outputs(enc, x, valid, cfg, torch.Generator().manual_seed(0))


def test_loss_he_embedding_is_the_inference_path_and_blind_to_ihc():
    """Default stage-2 loss input: the H&E embedding cannot read IHC tokens (no fusion shortcut).

    Fails on the old single fused pass, where the H&E embedding changes with the IHC tokens.
    """
    torch.manual_seed(0)
    enc = _enc()
    x = torch.randn(2, 3, 6, 16)
    valid = torch.ones(2, 3, 6, dtype=torch.bool)
    x2 = x.clone()
    x2[:, 1:] = torch.randn(2, 2, 6, 16)  # same H&E, other IHC
    a, b = _branch_outputs("alone", x, valid, enc), _branch_outputs("alone", x2, valid, enc)
    torch.testing.assert_close(a["slide"][:, 0], b["slide"][:, 0])
    torch.testing.assert_close(a["tokens"][:, 0], b["tokens"][:, 0])
    torch.testing.assert_close(a["slide"][:, 0], enc.encode_he(x[:, 0])[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a["slide"][:, 1:], b["slide"][:, 1:], atol=1e-4)  # IHC side moves
    # IHC embeddings do not read H&E either (else the IHC side could copy the H&E query)
    x3 = x.clone()
    x3[:, 0] = torch.randn(2, 6, 16)
    c = _branch_outputs("alone", x3, valid, enc)
    torch.testing.assert_close(a["slide"][:, 1:], c["slide"][:, 1:])
    # the old path ("fused") leaks IHC into the H&E embedding: what the default prevents
    fa, fb = _branch_outputs("fused", x, valid, enc), _branch_outputs("fused", x2, valid, enc)
    assert not torch.allclose(fa["slide"][:, 0], fb["slide"][:, 0], atol=1e-4)


def test_unknown_he_branch_is_an_input_error():
    with pytest.raises(InputError, match="he_query_branch"):
        _branch_outputs("both", torch.randn(1, 3, 4, 16), torch.ones(1, 3, 4, dtype=bool), _enc())


def test_abmil_mean_skip_ignores_padding_and_changes_embedding():
    torch.manual_seed(0)
    m = create_model("gated_abmil", in_dim=16, mean_skip=True, **TINY_ABMIL).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 3:] = False
    x2 = x.clone()
    x2[:, 3:] = 100.0  # padded tokens must not move the slide embedding
    torch.testing.assert_close(m(x, mask)[0], m(x2, mask)[0])
    with_skip = m(x, mask)[0]
    m.skip = None  # the skip term is really added
    assert not torch.allclose(m(x, mask)[0], with_skip, atol=1e-4)
