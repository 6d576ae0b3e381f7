"""Losses: L2-normalised patch NCE, location-pair positives, masked symmetric InfoNCE, GOT."""

from __future__ import annotations

import numpy as np
import torch

from cscl.models.losses import (
    got_loss,
    masked_view_mse,
    patch_nce,
    random_token_mask,
    symmetric_infonce,
)


def test_patch_nce_is_scale_invariant_and_prefers_true_pairs():
    torch.manual_seed(0)
    q = torch.relu(torch.randn(32, 16))
    k = q + 0.05 * torch.randn(32, 16)
    base = patch_nce(q, k)
    torch.testing.assert_close(patch_nce(q * 100.0, k * 0.01), base)
    shuffled = patch_nce(q, k[torch.randperm(32)])
    assert base < shuffled
    # the raw dot product of the reference is NOT scale invariant
    assert not torch.allclose(
        patch_nce(q * 100, k, normalize=False), patch_nce(q, k, normalize=False)
    )


def test_location_pairs_define_the_positives():
    """H&E token i's positive is the IHC token at the registered location, not index i."""
    from cscl.registration import pair_by_location

    ps = 100
    gx, gy = np.meshgrid(np.arange(6), np.arange(6))
    he = np.stack([gx.ravel(), gy.ravel()], 1) * ps
    perm = np.random.default_rng(0).permutation(len(he))
    shift = np.array([3 * ps, 1 * ps])
    ihc = he[perm] + shift  # same tissue, shifted, stored in another order
    M = np.array([[1.0, 0, shift[0]], [0, 1.0, shift[1]]])
    hi, ii = pair_by_location(he, ihc, M, 0.75 * ps, ps, ps)
    assert len(hi) == len(he)
    np.testing.assert_array_equal(ihc[ii], he[hi] + shift)
    torch.manual_seed(0)
    feats = torch.randn(len(he), 8)
    ihc_feats = feats[torch.from_numpy(perm)] + 0.01 * torch.randn(len(he), 8)
    good = patch_nce(feats[hi], ihc_feats[ii])
    by_index = patch_nce(feats, ihc_feats)
    assert good < 0.1 < by_index


def test_symmetric_infonce_masks_missing_stain():
    torch.manual_seed(0)
    a = torch.randn(6, 8, requires_grad=True)
    b = torch.randn(6, 8, requires_grad=True)
    mask = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    loss = symmetric_infonce(a, b, mask, temperature=0.001)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert (a.grad[~mask] == 0).all() and (b.grad[~mask] == 0).all()
    b2 = b.detach().clone()
    b2[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)  # garbage in the missing rows
    torch.testing.assert_close(symmetric_infonce(a, b2, mask, 0.001), loss.detach())
    # fewer than 2 cases with the stain: no contrast possible → exactly 0, finite grads
    one = torch.tensor([1, 0, 0, 0, 0, 0], dtype=torch.bool)
    z = symmetric_infonce(a, b, one)
    assert float(z.detach()) == 0.0


def test_got_uses_more_tokens_than_batch_size():
    torch.manual_seed(0)
    B, N = 2, 300
    x = torch.randn(B, N, 8, requires_grad=True)
    y = torch.randn(B, N, 8)
    m = torch.ones(B, N, dtype=torch.bool)
    loss, plans = got_loss(x, m, y, m, n_tokens=128, return_plans=True)
    assert len(plans) == B
    assert all(p.shape == (128, 128) for p in plans)  # 128 tokens per slide, not B
    torch.testing.assert_close(plans[0].sum(), torch.tensor(1.0), atol=1e-3, rtol=0)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    same = got_loss(y, m, y, m, n_tokens=128)
    assert same < loss


def test_masked_view():
    mask = torch.ones(3, 100, dtype=torch.bool)
    mask[2, 1:] = False
    g = torch.Generator().manual_seed(0)
    kept = random_token_mask(mask, 0.5, g)
    assert 30 < int(kept[0].sum()) < 70 and int(kept[2].sum()) == 1
    z = torch.randn(3, 4)
    assert float(masked_view_mse(z, z)) == 0.0
