"""Objective registry, the one `fit` loop and the plug-in point (a new objective in one class)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cscl.errors import InputError
from cscl.train import (
    AdapterConfig,
    Objective,
    Selection,
    SlideConfig,
    TrainInputs,
    create_objective,
    fit,
    list_objectives,
    objective_config,
    pretrain,
    register_objective,
)
from cscl.train import registry as objective_registry
from cscl.train.labels import holdout_split


@pytest.fixture
def scratch_registry(monkeypatch):
    """Objectives registered by a test disappear after it."""
    monkeypatch.setattr(objective_registry, "_OBJECTIVES", dict(objective_registry._OBJECTIVES))


def test_builtin_objectives_are_registered_by_stage():
    assert list_objectives("slide") == ["cscl", "histostainalign", "madeleine", "supervised"]
    assert list_objectives("adapter") == ["adapter"]
    with pytest.raises(InputError, match="unknown objective 'nope'"):
        objective_config("nope")


def test_objective_config_is_frozen_defaults_then_overrides():
    cfg = objective_config("histostainalign", epochs=3, label_task="er_status", lr=None)
    assert isinstance(cfg, SlideConfig) and cfg.objective == "histostainalign"
    assert cfg.epochs == 3 and cfg.lr == 5e-5 and cfg.temperature == 0.01  # paper defaults kept
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 5  # type: ignore[misc]
    given = SlideConfig(epochs=2)  # an explicit config is used as is (no defaults applied)
    mad = objective_config("madeleine", given)
    assert mad.fusion is True and mad.objective == "madeleine" and given.objective == "cscl"
    with pytest.raises(InputError, match="no setting"):
        objective_config("adapter", n_tokens=4)
    assert isinstance(objective_config("adapter"), AdapterConfig)


def test_holdout_split_is_stratified_seeded_and_keeps_a_training_case_per_class():
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, -1, 2])
    tr, va = holdout_split(y, 0.4, seed=3)
    assert sorted(tr + va) == [i for i in range(len(y)) if y[i] >= 0]
    assert sorted(y[va].tolist()) == [0, 0, 1, 1]  # 2 per large class, none from the singleton
    assert (tr, va) == holdout_split(y, 0.4, seed=3)
    assert holdout_split(y, 0.0)[1] == []


class _Scripted(Objective):
    """A throwaway objective defined inside the test module: least squares on random data, with
    a scripted per-epoch metric so selection can be checked."""

    scores = (1.0, 3.0, 2.0)

    def setup(self, device):
        self.device = device
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 100.0  # big gradients
        self.lin = torch.nn.Linear(4, 1)
        self.states: list[dict] = []

    def modules(self):
        return {"lin": self.lin}

    def n_items(self):
        return len(self.x)

    def loss(self, idx, g):
        return ((self.lin(self.x[idx]).squeeze(1) - self.y[idx]) ** 2).mean()

    def selection(self):
        return Selection("score", "max", after=1)

    def epoch_metrics(self):
        self.states.append({k: v.clone() for k, v in self.lin.state_dict().items()})
        return {"score": self.scores[len(self.states) - 1]}


def test_new_objective_plugs_in_with_one_decorated_class(scratch_registry, cohort, tmp_path):
    register_objective("scripted")(_Scripted)
    assert "scripted" in list_objectives()
    obj = create_objective("scripted", TrainInputs(cohort), epochs=3, batch_size=8, lr=0.1,
                           warmup_epochs=0, grad_clip=1.0, quiet=True, device="cpu")  # fmt: skip
    res = fit(obj)
    assert [h["score"] for h in res.history] == [1.0, 3.0, 2.0]
    assert res.selection == {"method": "score", "after_epoch": 1, "mode": "max", "score": 3.0,
                             "epoch": 1}  # fmt: skip
    for k, v in obj.lin.state_dict().items():  # the best epoch's weights were restored
        torch.testing.assert_close(v, obj.states[1][k])
    grad = torch.cat([p.grad.flatten() for p in obj.lin.parameters()])
    assert float(grad.norm()) <= 1.0 + 1e-5  # fit clipped the last step's gradients
    assert not obj.lin.training  # left in eval mode


def test_new_objective_runs_through_pretrain(scratch_registry, sim, tmp_path):
    register_objective("scripted")(_Scripted)
    out = pretrain("scripted", features=sim["features"], manifest=str(sim["manifest"]),
                   out=tmp_path / "run", config=dict(epochs=3, quiet=True, device="cpu"))  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "scripted" and cfg["selection"]["epoch"] == 1
    assert cfg["data"]["n_cases"] == 10 and cfg["train"]["epochs"] == 3 and len(cfg["history"]) == 3
    assert set(torch.load(out / "lin.pt", weights_only=True)) == {"weight", "bias"}


def test_stage1_gradients_are_clipped(cohort, regs):
    obj = create_objective("adapter", TrainInputs(cohort, regs), epochs=1, batch_size=4,
                           pairs_per_case=16, grad_clip=1e-3, quiet=True, device="cpu")  # fmt: skip
    res = fit(obj)
    grad = torch.cat([p.grad.flatten() for p in obj.adapter.parameters() if p.grad is not None])
    assert float(grad.norm()) <= 1e-3 * (1 + 1e-4)
    assert res.selection == {"method": "last", "epoch": 0}


def test_objective_input_errors_name_the_fix(cohort, tmp_path):
    with pytest.raises(InputError, match="--labels"):
        create_objective("supervised", TrainInputs(cohort), label_task="er_status")
    with pytest.raises(InputError, match="uses no stage-1 adapter"):
        create_objective("madeleine", TrainInputs(cohort, adapter_dir=tmp_path))


def test_fit_logs_each_epoch_and_pretrain_writes_the_curve(scratch_registry, sim, tmp_path, capsys):
    """Off a terminal (a log file, a pod) training prints a line per epoch with its loss; the run
    dir holds the curve as history.csv + loss.png (cscl.train.fit.write_history)."""
    import pandas as pd

    from cscl.train.fit import curve_html

    register_objective("scripted")(_Scripted)
    out = pretrain("scripted", features=sim["features"], manifest=str(sim["manifest"]),
                   out=tmp_path / "run", config=dict(epochs=3, device="cpu"))  # fmt: skip
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "epoch" in ln]
    assert len(lines) == 3 and "epoch 1 loss" in lines[0] and "ETA" in lines[0]
    assert "epoch 2 loss" in lines[1] and "score 3" in lines[1]
    assert "done in" in lines[-1] and "epoch 3 loss" in lines[-1]
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2] and hist["loss"].notna().all()
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in curve_html(out)
