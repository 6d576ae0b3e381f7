"""The protocol registry: a new protocol is one registered function, run by `evaluate` on every
embeddings table, with its section, paired tests and predictions in the outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cscl.errors import InputError
from cscl.eval import protocols
from cscl.eval.protocols import ProtocolOutput, parse_protocols, protocol
from cscl.eval.run import evaluate
from cscl.eval.tasks import CLASSIFICATION


def test_builtin_protocols_and_parsing():
    assert protocols.protocol_names() == ("fewshot", "kfold", "survival")
    assert parse_protocols(" KFold,survival ") == ["kfold", "survival"]
    with pytest.raises(InputError, match=r"unknown protocol\(s\) \['cox'\]"):
        parse_protocols("kfold,cox")


def test_a_registered_protocol_runs_in_evaluate(data, meta_for, tmp_path, monkeypatch):
    monkeypatch.setattr(protocols, "_REGISTRY", dict(protocols._REGISTRY))

    @protocol("centroid", CLASSIFICATION)
    def centroid(d, cfg):
        """Leave-one-out nearest class centroid: accuracy per case as paired scores."""
        y = np.asarray(d.target.y)
        hits = []
        for i in range(len(y)):
            rest = np.arange(len(y)) != i
            cents = {c: d.X[rest & (y == c)].mean(0) for c in d.target.classes}
            hits.append(min(cents, key=lambda c: np.linalg.norm(d.X[i] - cents[c])) == y[i])
        acc = np.asarray(hits, float)
        preds = pd.DataFrame({"case_id": d.case_ids, "fold": 0, "hit": acc})
        return ProtocolOutput({"accuracy": acc.mean()}, {"centroid_hits": acc}, preds)

    labels, X, N = data
    m = evaluate({"signal": (meta_for(labels.case_id), X), "noise": (meta_for(labels.case_id), N)},
                 labels, "er_status,os", tmp_path, "centroid", write_report=False)  # fmt: skip
    res = m["tasks"]["er_status"]["results"]
    assert res["signal"]["centroid"]["accuracy"] > 0.8 > 0.7 > res["noise"]["centroid"]["accuracy"]
    test = m["tasks"]["er_status"]["comparisons"]["noise"]["centroid_hits"]
    assert test["n_pairs"] == 60 and test["p_value"] < 0.001
    assert m["skipped"] == [{"task": "os", "reason": "survival task but no matching protocol "
                             "among ['centroid']"}]  # fmt: skip
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    assert list(preds.columns[:6]) == ["method", "task", "protocol", "case_id", "fold", "hit"]
    assert set(preds["protocol"]) == {"centroid"} and len(preds) == 120
