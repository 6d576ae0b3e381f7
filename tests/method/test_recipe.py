"""The training recipe (issue 10): defaults backed by the planted-signal benchmark, the paper's
values as a preset, held-out cross-stain retrieval logged per epoch."""

from __future__ import annotations

import json

import pytest
import torch

from cscl.errors import InputError
from cscl.train import objective_config, pretrain
from cscl.train.presets import PRESETS, preset_overrides
from cscl.train.stage2 import SlideConfig, build_encoder, he_batches, monitor_split

TINY = dict(hidden=16, n_heads=1, head_dim=8, attn_hidden=8, embed_dim=8, token_dim=4)


def test_recipe_defaults_and_the_paper_preset():
    for name in ("cscl", "madeleine"):
        c = objective_config(name)
        assert (c.temperature, c.got_weight) == (0.07, 0.0), name
    a = objective_config("adapter")
    assert a.residual and a.got_weight == 0.0
    assert objective_config("histostainalign").temperature == 0.01  # its own paper value
    paper = objective_config("cscl", preset_overrides("paper", "cscl"))
    assert (paper.temperature, paper.got_weight) == (0.001, 1.0)
    pa = objective_config("adapter", preset_overrides("paper", "adapter"))
    assert not pa.residual and pa.got_weight == 1.0
    assert preset_overrides("paper", "histostainalign") == {}  # keeps its own T
    quick = preset_overrides("quick", "supervised")  # stage entries apply to every objective
    assert quick == PRESETS["quick"]["slide"] and quick["abmil"]["hidden"] == 128
    with pytest.raises(InputError, match="unknown preset"):
        preset_overrides("fast", "cscl")


def test_monitor_split_is_seeded_disjoint_and_skipped_for_tiny_cohorts():
    assert monitor_split(8, 0.1) == (list(range(8)), [])  # 1 held-out case says nothing
    tr, ho = monitor_split(100, 0.1, seed=3)
    assert len(ho) == 10 and not set(tr) & set(ho) and sorted(tr + ho) == list(range(100))
    assert monitor_split(100, 0.1, seed=3) == (tr, ho) != monitor_split(100, 0.1, seed=4)


def test_padded_he_batches_embed_exactly_like_one_slide_at_a_time():
    torch.manual_seed(0)
    enc, _ = build_encoder(SlideConfig(abmil=TINY), 12, 5)
    enc.eval()

    class Slides:
        he = [torch.randn(n, 12) for n in (5, 17, 9)]

        def he_only(self, i, n):
            return self.he[i][:n]

    data = Slides()
    with torch.no_grad():
        one = torch.cat([enc.encode_he(data.he_only(i, 99)[None])[0] for i in range(3)])
        batched = torch.cat([enc.encode_he(x, m)[0] for x, m in he_batches(data, range(3), 99)])
    torch.testing.assert_close(one, batched, atol=1e-5, rtol=1e-5)


def test_cscl_logs_heldout_retrieval_and_never_trains_on_heldout_cases(sim, cohort, regs, tmp_path):
    cfg = dict(epochs=2, batch_size=4, n_tokens=16, rankme_after=1, abmil=TINY, quiet=True,
               device="cpu", monitor_frac=0.4)  # fmt: skip
    out = pretrain("cscl", features=sim["features"], manifest=str(sim["manifest"]),
                   out=tmp_path / "run", registration=str(sim["transforms"]), config=cfg)  # fmt: skip
    conf = json.loads((out / "config.json").read_text())
    held = conf["monitor"]["cases"]
    assert len(held) == 4  # 40 % of 10 cases
    for rec in conf["history"]:
        for key in ("rankme", "retrieval_train", "retrieval_heldout"):
            assert 0.0 <= rec[key] <= (1.0 if key != "rankme" else 100.0), (key, rec)
    assert conf["train"]["monitor_frac"] == 0.4
    # the batches come from the 6 training cases only
    from cscl.train import TrainInputs, create_objective

    obj = create_objective("cscl", TrainInputs(cohort, regs, None), cfg)
    obj.setup(torch.device("cpu"))
    assert obj.n_items() == 6 and len(obj.monitor_idx) == 4
    seen = []

    class Seen(Exception):
        pass

    def record(idx, n, g):
        seen.extend(idx)
        raise Seen

    obj.data.batch = record
    with pytest.raises(Seen):
        obj.loss(list(range(6)), torch.Generator())
    assert sorted(seen) == obj.train_idx and not set(seen) & set(obj.monitor_idx)
