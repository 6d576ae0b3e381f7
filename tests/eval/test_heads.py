import json

import numpy as np
import pandas as pd
import pytest

from cscl.errors import InputError
from cscl.eval.heads import apply_heads, fit_heads, head_scores, load_heads, save_heads
from cscl.eval.kfold import make_probe
from cscl.eval.survival import fit_cox
from cscl.eval.tasks import encode_labels


@pytest.fixture(scope="module")
def fitted(data):
    labels, X, _ = data
    lab = labels.copy()
    lab.loc[[0, 1], "subtype"] = np.nan  # unlabelled cases are left out of that head only
    heads = fit_heads(X, lab, ["er_status", "subtype", "os"], seed=0, n_iter=3, inner_folds=3)
    return lab, X, heads


def test_heads_reproduce_sklearn_exactly(fitted):
    lab, X, heads = fitted
    for task in ("er_status", "subtype"):
        ok = lab[task].notna().to_numpy()
        classes, y = encode_labels(lab.loc[ok, task])
        model, _ = make_probe(y, 3, 3, 0)
        model.fit(X[ok], y)
        assert heads[task]["classes"] == classes.tolist()
        assert np.allclose(head_scores(heads[task], X), model.predict_proba(X), atol=1e-10)
    cox = fit_cox(X, lab["os_time"].to_numpy(), lab["os_event"].to_numpy().astype(bool))
    assert np.allclose(head_scores(heads["os"], X), cox.predict(X), atol=1e-8)
    assert heads["subtype"]["n_train"] == len(lab) - 2


def test_apply_single_and_batch(fitted):
    _, X, heads = fitted
    one = apply_heads(heads, X[0])
    assert set(one) == {"er_status", "subtype", "os"}
    assert sum(one["subtype"].values()) == pytest.approx(1.0)
    assert isinstance(one["os"]["risk_score"], float)
    batch = apply_heads(heads, X[:4])
    assert batch["er_status"]["positive"][0] == pytest.approx(one["er_status"]["positive"])
    json.dumps(one)  # serving returns it as JSON


def test_json_round_trip_without_pickle(fitted, tmp_path):
    _, X, heads = fitted
    path = save_heads(heads, tmp_path / "heads.json")
    text = path.read_text()
    assert json.loads(text)["_format"].startswith("cscl-linear-heads")
    loaded = load_heads(path)
    assert apply_heads(loaded, X[3]) == apply_heads(heads, X[3])


def test_bad_heads_and_inputs(fitted, tmp_path):
    lab, X, heads = fitted
    with pytest.raises(InputError, match="dimensions"):
        apply_heads(heads, X[0, :10])
    (tmp_path / "bad.json").write_text(json.dumps({"er_status": {"type": "classification"}}))
    with pytest.raises(InputError, match="malformed"):
        load_heads(tmp_path / "bad.json")
    with pytest.raises(InputError, match="unknown task"):
        fit_heads(X, lab, ["nope"])
    with pytest.raises(InputError, match="align"):
        fit_heads(X[:5], lab, ["er_status"])
    one_class = pd.DataFrame({"er_status": ["negative"] * len(X)})
    with pytest.raises(InputError, match="er_status"):
        fit_heads(X, one_class, ["er_status"])
