import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from cscl.cli import main
from cscl.embeddings import write_embeddings
from cscl.errors import InputError
from cscl.eval.metrics import classification_artifacts, flat_metrics
from cscl.eval.run import evaluate

FAST = dict(n_boot=200, n_iter=2, inner_folds=3, draws=2, ks=(1, 5, 25))


@pytest.fixture(scope="module")
def cli_run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    argv = [
        "evaluate",
        "--embeddings", str(cohort / "signal.parquet"),
        "--labels", str(cohort / "labels.csv"),
        "--tasks", "er_status,subtype,os",
        "--out", str(out),
        "--bootstrap", "200", "--n-iter", "2", "--inner-folds", "3", "--draws", "2",
        "--ks", "5,25",
        "--baseline", str(cohort / "noise.parquet"), "--baseline-name", "noise",
        "--min-score", "0.7", "--time-unit", "months",
        "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_outputs_and_metrics_agree_with_sklearn(cli_run):
    m = json.loads((cli_run / "metrics.json").read_text())
    assert m["methods"] == ["cscl", "noise"] and m["dataset"]["n_cases"] == 60
    preds = pd.read_parquet(cli_run / "predictions.parquet")
    for task in ("er_status", "subtype"):
        for method in ("cscl", "noise"):
            kf = m["tasks"][task]["results"][method]["kfold"]
            p = preds[(preds.task == task) & (preds.method == method)]
            assert len(p) == 60
            classes = m["tasks"][task]["classes"]
            if len(classes) == 2:
                ref = roc_auc_score(p["y_true"] == classes[1], p[f"prob_{classes[1]}"])
            else:
                proba = p[[f"prob_{c}" for c in classes]].to_numpy()
                ref = roc_auc_score(p["y_true"], proba, multi_class="ovr", labels=classes)
            assert kf["metrics"]["auc"]["value"] == pytest.approx(ref)
    er = m["tasks"]["er_status"]["results"]
    assert er["cscl"]["kfold"]["metrics"]["auc"]["value"] > 0.95
    assert 0.3 < er["noise"]["kfold"]["metrics"]["auc"]["value"] < 0.7
    sv = preds[(preds.task == "os") & (preds.method == "cscl")]
    c = concordance_index_censored(sv["event"].astype(bool), sv["time"], sv["risk"])[0]
    assert m["tasks"]["os"]["results"]["cscl"]["survival"]["cindex"]["value"] == pytest.approx(c)
    comp = m["tasks"]["er_status"]["comparisons"]["noise"]
    assert comp["kfold_auc_bootstrap"]["p_value"] < 0.001
    assert m["tasks"]["os"]["comparisons"]["noise"]["cindex_bootstrap"]["p_value"] < 0.05
    # k=25 is skipped for subtype (20 per class) and said so
    assert any(s["task"] == "subtype" and "k=25" in s["protocol"] for s in m["skipped"])
    fs = {r["k"]: r for r in m["tasks"]["er_status"]["results"]["cscl"]["fewshot"]}
    assert fs[5]["status"] == "ok" and fs[5]["auc_mean"] > 0.8


def test_report_is_self_contained(cli_run):
    html = (cli_run / "report.html").read_text()
    for text in ("Slide-embedding evaluation", "er_status", "subtype", "os", "C-index",
                 "log-rank", "Wilcoxon", "skipped"):  # fmt: skip
        assert text in html
    assert html.count("data:image/png;base64,") >= 8
    assert "Quality gate PASSED" in html and "number at risk at time (months)" in html
    for png in ("er-status_roc.png", "subtype_cscl_confusion.png", "os_cscl_km.png"):
        assert (cli_run / png).read_bytes()[:4] == b"\x89PNG"


def test_kfp_views(cli_run):
    m = json.loads((cli_run / "metrics.json").read_text())
    flat = flat_metrics(m)
    assert all(isinstance(v, float) for v in flat.values())
    assert flat["er_status.cscl.kfold_auc"] == m["tasks"]["er_status"]["results"]["cscl"][
        "kfold"]["metrics"]["auc"]["value"]  # fmt: skip
    assert "os.cscl.cindex" in flat and "er_status.cscl_vs_noise.kfold_auc_bootstrap_p" in flat
    arts = classification_artifacts(m)
    roc = arts["er_status"]["roc"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["threshold"])
    assert "roc" not in arts["subtype"] and len(arts["subtype"]["confusion"]["matrix"]) == 3
    assert arts["er_status"]["confusion"]["categories"] == ["negative", "positive"]


def test_deterministic_in_memory_tables(data, meta_for, tmp_path):
    labels, X, _ = data
    tables = {"a": (meta_for(labels.case_id), X)}
    kw = dict(FAST, write_report=False)
    m1 = evaluate(tables, labels, "er_status,os", tmp_path / "1", "kfold,survival", seed=5, **kw)
    m2 = evaluate(tables, labels, "er_status,os", tmp_path / "2", "kfold,survival", seed=5, **kw)
    assert m1["tasks"] == m2["tasks"]
    p1 = pd.read_parquet(tmp_path / "1" / "predictions.parquet")
    assert p1.equals(pd.read_parquet(tmp_path / "2" / "predictions.parquet"))


def test_mismatched_cases_and_missing_labels_are_counted(data, meta_for, tmp_path):
    labels, X, _ = data
    labels = labels.copy()
    labels.loc[[0, 1, 2], "er_status"] = np.nan
    extra = meta_for([f"x{i}" for i in range(4)])
    meta = pd.concat([meta_for(labels.case_id[5:]), extra], ignore_index=True)
    emb = np.vstack([X[5:], np.zeros((4, X.shape[1]))])
    write_embeddings(tmp_path / "e.parquet", meta, emb.astype(np.float32))
    m = evaluate(
        {"m": str(tmp_path / "e.parquet")}, labels, ["er_status"], tmp_path / "o", "kfold",
        write_report=False, **FAST,
    )  # fmt: skip
    c = m["dataset"]["methods"]["m"]
    assert c["labels_without_embedding"] == 5 and c["embeddings_without_labels"] == 4
    assert m["dataset"]["n_cases"] == 55
    # cases 0-2 have no embedding anyway; drop 2 more NaN labels among embedded cases
    assert m["tasks"]["er_status"]["n_cases"] == 55
    labels.loc[[6, 7], "er_status"] = np.nan
    m = evaluate({"m": (meta, emb)}, labels, ["er_status"], tmp_path / "o2", "kfold",
                 write_report=False, **FAST)  # fmt: skip
    assert m["tasks"]["er_status"]["n_missing_labels"] == 2
    assert m["tasks"]["er_status"]["n_cases"] == 53
    assert any("without a label" in n for n in m["notes"])


def test_protocol_without_matching_task_is_a_documented_skip(data, meta_for, tmp_path):
    labels, X, _ = data
    m = evaluate({"m": (meta_for(labels.case_id), X)}, labels, "os", tmp_path, "kfold",
                 write_report=False, **FAST)  # fmt: skip
    assert m["skipped"][0]["task"] == "os" and "survival task" in m["skipped"][0]["reason"]


@pytest.mark.parametrize(
    "change, tasks, match",
    [
        (lambda d: d, "er_status,nope", "unknown task 'nope'"),
        (lambda d: d.assign(er_status="negative"), "er_status", "er_status"),
        (lambda d: d.assign(os_time=d.os_time - 100), "os", "must be > 0"),
        (lambda d: d.assign(os_event=2), "os", "0 or 1"),
    ],
)
def test_bad_input_errors(data, meta_for, tmp_path, change, tasks, match):
    labels, X, _ = data
    with pytest.raises(InputError, match=match):
        evaluate({"m": (meta_for(labels.case_id), X)}, change(labels.copy()), tasks, tmp_path,
                 write_report=False, **FAST)  # fmt: skip


def test_impossible_kfold_is_skipped_with_a_note(data, meta_for, tmp_path):
    """8 cases, 5 folds: k-fold and survival cannot run, few-shot can; like an impossible few-shot
    k, the impossible protocol is a note in metrics.json (and the report), not an abort."""
    labels, X, _ = data
    small = labels.iloc[:8].copy()
    m = evaluate({"m": (meta_for(small.case_id), X[:8])}, small, "er_status,os", tmp_path,
                 "fewshot,kfold,survival", write_report=True, **FAST)  # fmt: skip
    results = m["tasks"]["er_status"]["results"]["m"]
    assert "fewshot" in results and "kfold" not in results
    reasons = {(s["task"], s.get("protocol")): s["reason"] for s in m["skipped"]}
    assert "fewer than 5 folds" in reasons[("er_status", "kfold")]
    assert "cannot fill 5 folds" in reasons[("os", "survival")]
    assert "fewer than 5 folds" in (tmp_path / "report.html").read_text()


def test_nothing_evaluable_is_an_error(data, meta_for, tmp_path):
    labels, X, _ = data
    small = labels.iloc[:8].copy()
    with pytest.raises(InputError, match="nothing could be evaluated.*fewer than 5 folds"):
        evaluate({"m": (meta_for(small.case_id), X[:8])}, small, "er_status", tmp_path, "kfold",
                 write_report=False, **FAST)  # fmt: skip


def test_cli_reports_a_bad_task(cohort, tmp_path, capsys):
    rc = main(["evaluate", "--embeddings", str(cohort / "signal.parquet"), "--labels",
               str(cohort / "labels.csv"), "--tasks", "her2", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 2 and "unknown task 'her2'" in capsys.readouterr().err


def test_embeddings_and_labels_from_s3(cohort, tmp_path, s3_server):
    """Tables in a real S3 API (moto over HTTP on 127.0.0.1), as the pipeline passes them; the
    endpoint is the process's store (set once by the entry point), not an argument."""
    from cscl.io import storage

    srv = s3_server(buckets=["lab"])
    storage.configure_store(srv.store)
    storage.upload(cohort / "signal.parquet", "s3://lab/emb/signal.parquet")
    storage.upload(cohort / "labels.csv", "s3://lab/cohorts/c/labels.csv")
    m = evaluate({"cscl": "s3://lab/emb/signal.parquet"}, "s3://lab/cohorts/c/labels.csv",
                 "er_status", tmp_path, "kfold", write_report=False, **FAST)  # fmt: skip
    assert m["tasks"]["er_status"]["results"]["cscl"]["kfold"]["metrics"]["auc"]["value"] > 0.95
    assert m["dataset"]["methods"]["cscl"]["source"] == "s3://lab/emb/signal.parquet"
