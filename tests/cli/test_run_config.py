"""`cscl run --config cohort.yaml` runs the whole chain on a tiny synthetic cohort in-process,
takes its options from the file, resumes on a rerun, redoes only what a changed key affects, and
keeps the training pipeline's quality gate."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from cscl import cli

pytestmark = pytest.mark.slow

CONFIG = {
    "out": "run",
    "quiet": True,
    "device": "cpu",
    "data": {"manifest_uri": "cohort/manifest.csv", "labels_uri": "cohort/labels.csv",
             "target_mpp": 2.0, "patch_size": 64},
    "encoder": {"backbone": "test_resnet", "allow_random": True},
    "training": {"preset": "quick", "n_tokens": 128},
    "evaluation": {"tasks": "subtype", "protocols": "kfold", "folds": 2, "n_boot": 10},
    "serving": {"min_score": 0.0, "version": "1.0-test"},
}  # fmt: skip


def _run(tmp_path, capsys, **changes) -> tuple[int, str]:
    cfg = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition("__")
        (cfg[section] if section else cfg)[key] = value
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(cfg))
    rc = cli.main(["run", "--config", "cohort.yaml"])
    return rc, capsys.readouterr().out


def test_run_chains_resumes_and_gates(tmp_path, monkeypatch, capsys):
    from cscl.synthetic.testing import tiny_cohort

    tiny_cohort(tmp_path / "cohort", n_cases=4, stains=("HE", "HER2"), width=1600, height=1200)
    monkeypatch.chdir(tmp_path)

    rc, out = _run(tmp_path, capsys)
    assert rc == 0, out
    run = tmp_path / "run"
    assert len(list((run / "features").glob("*.h5"))) == 8
    reg = pd.read_csv(run / "registration" / "registration.csv")
    assert len(reg) == 4 and reg["ok"].all()
    slide = json.loads((run / "slide" / "config.json").read_text())
    # the file's n_tokens beat the quick preset's; the preset's epochs apply (the file has none)
    assert slide["train"]["n_tokens"] == 128 and slide["train"]["epochs"] == 5
    assert slide["adapter_run"]
    assert len(pd.read_parquet(run / "embeddings.parquet")) == 4
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["subtype"]
    bundle = json.loads((run / "models" / "cscl" / "bundle.json").read_text())
    assert bundle["version"] == "1.0-test" and list(bundle["tasks"]) == ["subtype"]

    # a rerun with the same file does nothing
    trained = (run / "slide" / "config.json").stat().st_mtime_ns
    rc, out = _run(tmp_path, capsys)
    assert rc == 0 and out.count("skipped: done by an earlier run") == 7, out
    assert (run / "slide" / "config.json").stat().st_mtime_ns == trained

    # an evaluation key changed: evaluate and package again, the model is kept
    rc, out = _run(tmp_path, capsys, evaluation__n_boot=20)
    assert rc == 0 and out.count("skipped: done by an earlier run") == 5, out
    assert (
        json.loads((run / "evaluation" / "metrics.json").read_text())["config"]["bootstrap"] == 20
    )
    assert (run / "slide" / "config.json").stat().st_mtime_ns == trained

    # the quality gate is checked on every run
    rc, out = _run(tmp_path, capsys, evaluation__n_boot=20, serving__min_score=2.0)
    assert rc == 1 and "quality gate closed" in out


def test_run_needs_a_config(capsys):
    assert cli.main(["run"]) == 2
    assert "needs a cohort config" in capsys.readouterr().err
