"""Training end to end on tiny simulated features: CLI, checkpoints, determinism, baselines."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cscl.cli import main
from cscl.embeddings import read_embeddings
from cscl.train.checkpoint import load_trained

TINY = dict(hidden=32, n_heads=2, head_dim=16, attn_hidden=16, embed_dim=24, token_dim=8)


def _common(sim):
    return ["--features", str(sim["features"]), "--manifest", str(sim["manifest"]), "--quiet"]


@pytest.fixture(scope="module")
def adapter_run(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    rc = main(["pretrain", *_common(sim), "--stage", "adapter", "--out", str(out),
               "--registration", str(sim["transforms"]), "--epochs", "2", "--batch-size", "4",
               "--pairs-per-case", "32", "--scales", "10x,5x"])  # fmt: skip
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def slide_run(sim, adapter_run):
    out = adapter_run.parent / "s"
    rc = main(["pretrain", *_common(sim), "--stage", "slide", "--adapter", str(adapter_run),
               "--out", str(out), "--registration", str(sim["transforms"]), "--epochs", "3",
               "--batch-size", "4", "--tokens", "32", "--rankme-after", "2", "--small"])  # fmt: skip
    assert rc == 0
    return out


def test_adapter_run_is_self_describing(adapter_run, cohort):
    cfg = json.loads((adapter_run / "config.json").read_text())
    assert cfg["kind"] == "adapter" and cfg["seed"] == 0
    assert cfg["data"]["fingerprint"] == cohort.fingerprint
    assert cfg["data"]["extractor_hash"] == cohort.extractor_hash
    assert cfg["env"]["packages"]["torch"] and "git_commit" in cfg["env"]
    assert cfg["adapter"]["config"]["scales"] == ["10x", "5x"]
    assert cfg["train"]["pairing"] == "location" and len(cfg["history"]) == 2
    sd = torch.load(adapter_run / "adapter.pt", weights_only=True)
    assert any(k.startswith("adapters.5x") for k in sd)


def test_end_to_end_slide_and_embed(slide_run, sim, tmp_path):
    cfg = json.loads((slide_run / "config.json").read_text())
    assert cfg["kind"] == "cscl" and cfg["selection"]["method"] == "rankme"
    assert cfg["selection"]["epoch"] >= 1  # chosen after the warm-up
    assert all("rankme" in h for h in cfg["history"][1:])
    out = tmp_path / "emb.parquet"
    rc = main(["embed", "--model", str(slide_run), "--features", str(sim["features"]),
               "--manifest", str(sim["manifest"]), "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    meta, X = read_embeddings(out)
    assert len(meta) == 10 and set(meta["stain"]) == {"HE"} and X.shape == (10, 64)
    assert meta["model_version"].iloc[0] == cfg["model_version"]
    assert np.isfinite(X).all() and X.std(0).max() > 0


def test_load_trained_api_and_relocatable_run(slide_run, cohort, tmp_path):
    moved = tmp_path / "bundle" / "model"
    shutil.copytree(slide_run, moved)
    m = load_trained(moved)
    f = cohort.cases[0].he.features.astype(np.float32)
    emb, attn = m.embed(f, cohort.cases[0].he.coords)
    assert emb.shape == (m.embed_dim,) and m.input_dim == f.shape[1]
    assert attn.shape == (len(f),) and abs(attn.sum() - 1) < 1e-4
    again = load_trained(slide_run).embed(f)[0]
    np.testing.assert_allclose(emb, again, rtol=1e-5, atol=1e-6)
    batch = m.embed_batch([f, f[:5]])
    assert len(batch) == 2 and batch[1][1].shape == (5,)
    from cscl.errors import InputError

    with pytest.raises(InputError, match="dimension"):
        m.embed(np.zeros((4, 7), np.float32))


def test_training_is_deterministic_with_seed(sim, tmp_path):
    from cscl.train import pretrain

    def run(out, seed):
        cfg = dict(epochs=1, batch_size=5, n_tokens=16, rankme_after=1, abmil=TINY, seed=seed,
                   quiet=True, device="cpu")  # fmt: skip
        pretrain("cscl", features=sim["features"], manifest=str(sim["manifest"]), out=out,
                 registration=str(sim["transforms"]), config=cfg)  # fmt: skip
        return torch.load(out / "slide_encoder.pt", weights_only=True)

    a, b, c = run(tmp_path / "1", 0), run(tmp_path / "2", 0), run(tmp_path / "3", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_random_pairing_and_madeleine_and_mean_pool(sim, tmp_path):
    c = _common(sim)
    assert main(["pretrain", *c, "--stage", "adapter", "--out", str(tmp_path / "ar"),
                 "--pairing", "random", "--epochs", "1", "--pairs-per-case", "16"]) == 0  # fmt: skip
    cfg = json.loads((tmp_path / "ar" / "config.json").read_text())
    assert cfg["train"]["pairing"] == "random"
    assert main(["pretrain", *c, "--stage", "slide", "--objective", "madeleine",
                 "--out", str(tmp_path / "mad"), "--epochs", "1", "--tokens", "16", "--small",
                 "--rankme-after", "1"]) == 0  # fmt: skip
    m = load_trained(tmp_path / "mad")
    assert m.kind == "madeleine" and m.encoder.fusion is None and m.adapter is None
    out = tmp_path / "mp.parquet"
    assert main(["embed", "--model", "mean-pool", "--features", str(sim["features"]),
                 "--manifest", str(sim["manifest"]), "--out", str(out), "--quiet"]) == 0  # fmt: skip
    _, X = read_embeddings(out)
    assert X.shape == (10, 32)


def test_histostainalign_and_supervised_predict_status(sim, cohort, tmp_path):
    c = _common(sim)
    lab = ["--labels", str(sim["labels"]), "--label-task", "er_status"]
    assert main(["pretrain", *c, "--stage", "slide", "--objective", "histostainalign", *lab,
                 "--out", str(tmp_path / "hsa"), "--epochs", "1", "--tokens", "16",
                 "--small", "--rankme-after", "1"]) == 0  # fmt: skip
    m = load_trained(tmp_path / "hsa")
    p = m.predict_status(cohort.cases[0].he.features.astype(np.float32))
    assert m.classes == ["negative", "positive"] and abs(p.sum() - 1) < 1e-5
    # checkpoint chosen on held-out labelled cases, not on RankMe (label-free) as before
    assert m.config["selection"]["method"] == "val_loss" and m.config["validation"]["cases"]
    assert all("val_loss" in h for h in m.config["history"])
    assert main(["pretrain", *c, "--stage", "slide", "--objective", "supervised", *lab,
                 "--out", str(tmp_path / "sup"), "--epochs", "1", "--tokens", "16",
                 "--small", "--rankme-after", "1"]) == 0  # fmt: skip
    assert load_trained(tmp_path / "sup").predict_status(cohort.cases[1].he.features).shape == (2,)


def test_cli_errors_are_clear(sim, tmp_path, capsys):
    c = _common(sim)
    rc = main(
        ["pretrain", *c, "--stage", "adapter", "--out", str(tmp_path / "x"), "--epochs", "1"]
    )  # fmt: skip  (location pairing without registration)
    assert rc == 2 and "--registration" in capsys.readouterr().err
    rc = main(["pretrain", *c, "--stage", "slide", "--objective", "supervised",
               "--out", str(tmp_path / "y")])  # fmt: skip
    assert rc == 2 and "--labels" in capsys.readouterr().err
    rc = main(["embed", "--model", str(tmp_path), "--features", str(sim["features"]),
               "--manifest", str(sim["manifest"]), "--out", str(tmp_path / "e.parquet")])  # fmt: skip
    assert rc == 2 and "not a cscl run directory" in capsys.readouterr().err


def test_cli_he_query_branch_switch_reaches_the_run_config(sim, adapter_run, slide_run, tmp_path):
    assert (
        json.loads((slide_run / "config.json").read_text())["train"]["he_query_branch"] == "alone"
    )
    out = tmp_path / "fused"
    assert main(["pretrain", *_common(sim), "--stage", "slide", "--adapter", str(adapter_run),
                 "--out", str(out), "--registration", str(sim["transforms"]), "--epochs", "1",
                 "--tokens", "16", "--rankme-after", "1", "--small",
                 "--he-query-branch", "fused"]) == 0  # fmt: skip
    assert json.loads((out / "config.json").read_text())["train"]["he_query_branch"] == "fused"
