"""run_monitoring / `cscl monitor`: reports, verdicts, bad input, idempotent retraining trigger."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from cscl.cli import main
from cscl.errors import InputError
from cscl.io import storage
from cscl.monitoring import state as st
from cscl.monitoring.logs import resolve_window
from cscl.synthetic import ShiftSpec
from cscl_platform.monitoring.retraining import TriggerConfig
from cscl_platform.monitoring.run import run_monitoring
from cscl_platform.monitoring.trigger import GithubTarget, KfpTarget

NOW = dt.datetime(2026, 11, 3, 6, 0, tzinfo=dt.UTC)


def _run(prefix, bundle, mon, **kw):
    kw.setdefault("policy", mon.FAST_POLICY)
    kw.setdefault("since", "2026-11-01")
    kw.setdefault("until", "2026-11-02")
    kw.setdefault("now", NOW)
    return run_monitoring(
        model_version="v1", logs=str(prefix), reference=str(bundle), progress=False, **kw
    )


def test_cli_writes_report_and_prints_verdict(tmp_path, bundle, record_model, mon, capsys):
    mon.write_cohort(tmp_path / "proj", record_model, 60, seed=7, shift=ShiftSpec(stain=0.7))
    (tmp_path / "proj" / "inference-logs" / f"date={mon.DAY}" / "bad.json").write_text("{oops")
    out = tmp_path / "reports" / "drift"
    rc = main(
        [
            "monitor",
            "--model-version", "v1",
            "--since", "2026-11-01",
            "--until", "2026-11-02",
            "--logs", str(tmp_path / "proj"),
            "--reference", str(bundle),
            "--out", str(out),
        ]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    assert "verdict: drift" in text and "trigger mode is 'none'" in text
    assert "skipped {'corrupt_json': 1}" in text
    d = json.loads((out / "drift.json").read_text())
    assert d["verdict"] == "drift" and d["model_version"] == "v1"
    assert d["window"] == {"since": "2026-11-01", "until": "2026-11-02"}
    assert d["sample_sizes"]["current"] == 60 and d["sample_sizes"]["reference"] == 150
    assert d["records"] == {"files": 61, "used": 60, "skipped": {"corrupt_json": 1}}
    for name in ("embedding", "qc", "predictions"):
        assert set(d["signals"][name]) >= {"status", "value", "threshold", "method"}
    assert d["signals"]["qc"]["status"] == "drift"
    assert d["signals"]["qc"]["columns"]["qc_od_mean_0"]["kind"] == "p_value"
    assert d["retraining"]["action"] == "none"
    assert d["policy"]["min_samples"] == 30
    html = (out / "drift.html").read_text()
    assert "<html" in html.lower() and "slide_embedding" in html
    # the page opens with OUR verdict and what drove it, before anything of Evidently's
    body = html[re.search(r"<body[^>]*>", html, re.I).end() :]
    assert body.startswith('<div id="cscl-verdict"')
    head = body[: body.index("</div>")]
    assert "Verdict: DRIFT" in head and re.search(r"driven by: <b>[^<]*\bqc\b", head)
    assert "qc_od_mean_0" in head and "<title>cscl drift: drift · v1</title>" in html


def test_unshifted_cohort_no_drift_default_report_location(tmp_path, bundle, record_model, mon):
    mon.write_cohort(tmp_path, record_model, 60, seed=8)
    res = _run(tmp_path, bundle, mon, policy=None)
    assert res.verdict == "no drift", res.drift["signals"]
    page = (tmp_path / "monitoring" / "v1_2026-11-01_2026-11-02" / "drift.html").read_text()
    assert page.index("Verdict: NO DRIFT") < page.index("Evidently report below")
    assert "driven by" not in page and "no signal in retrain_on drifted" in page
    assert res.report_uri == f"{tmp_path}/monitoring/v1_2026-11-01_2026-11-02"
    assert (tmp_path / "monitoring" / "v1_2026-11-01_2026-11-02" / "drift.json").exists()


def test_empty_window_is_insufficient_data(tmp_path, bundle, record_model, mon, github_standin):
    mon.write_cohort(tmp_path, record_model, 5, seed=9)
    trig = TriggerConfig("github", github=GithubTarget("acme/cscl", api_url=github_standin.url))
    for since, until, n in (("2026-10-01", "2026-10-31", 0), ("2026-11-01", "2026-11-02", 5)):
        res = _run(tmp_path, bundle, mon, since=since, until=until, trigger=trig)
        assert res.verdict == "insufficient data"
        assert f"{n} usable log records" in res.reason and "needs 20" in res.reason
        assert res.drift["signals"] == {} and res.action["action"] == "none"
        assert (tmp_path / "monitoring").exists()
    assert not github_standin.requests


def test_model_version_without_reference(tmp_path, mon, capsys):
    rc = main(
        [
            "monitor", "--model-version", "v3", "--since", "2026-11-01",
            "--logs", str(tmp_path), "--reference", str(tmp_path / "models" / "v3"),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "no reference set found" in err and "reference.parquet" in err


def test_retried_run_triggers_github_once(tmp_path, bundle, record_model, mon, github_standin):
    mon.write_cohort(tmp_path, record_model, 60, seed=10, shift=ShiftSpec(stain=0.8))
    trig = TriggerConfig("github", github=GithubTarget("acme/cscl", api_url=github_standin.url))
    first = _run(tmp_path, bundle, mon, trigger=trig)
    assert first.verdict == "drift" and first.action["action"] == "triggered"
    assert "dispatched workflow retrain.yml on acme/cscl" in first.action["reason"]
    (req,) = github_standin.requests
    assert req["body"]["inputs"]["model_version"] == "v1"
    assert "embedding" in req["body"]["inputs"]["reason"]
    again = _run(tmp_path, bundle, mon, trigger=trig)
    assert again.action["action"] == "already_triggered"
    assert len(github_standin.requests) == 1
    state = json.loads(
        (tmp_path / "monitoring" / "state" / "v1" / "2026-11-01_2026-11-02.json").read_text()
    )
    assert state["status"] == "triggered" and state["result"]["status"] == 204
    # one report per window: the rerun rewrote the same folder
    assert {p.name for p in (tmp_path / "monitoring").iterdir()} == {
        "state",
        "v1_2026-11-01_2026-11-02",
    }
    # another window within the cool-down: no new retraining
    mon.write_cohort(
        tmp_path, record_model, 60, seed=11, shift=ShiftSpec(stain=0.8), day="2026-11-03"
    )
    later = _run(
        tmp_path, bundle, mon, trigger=trig, since="2026-11-03", until="2026-11-03",
        now=NOW + dt.timedelta(hours=30),
    )  # fmt: skip
    assert later.verdict == "drift" and later.action["action"] == "skipped_cooldown"
    assert "cool-down is 168 h" in later.action["reason"]
    assert len(github_standin.requests) == 1


def test_crash_after_trigger_is_not_retriggered(
    tmp_path, bundle, record_model, mon, kfp_standin, monkeypatch
):
    mon.write_cohort(tmp_path, record_model, 60, seed=12, shift=ShiftSpec(stain=0.8))
    trig = TriggerConfig("kfp", kfp=KfpTarget(host=kfp_standin.url))

    def crash(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(st, "update_state", crash)  # dies right after starting the run
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path, bundle, mon, trigger=trig)
    monkeypatch.undo()
    assert len(kfp_standin.calls("POST", f"{mon.KFP}/runs")) == 1
    again = _run(tmp_path, bundle, mon, trigger=trig)
    assert again.action["action"] == "already_triggered"
    assert again.action["previous"]["status"] == "claimed"
    assert len(kfp_standin.calls("POST", f"{mon.KFP}/runs")) == 1
    forced = _run(tmp_path, bundle, mon, trigger=TriggerConfig("kfp", kfp=trig.kfp, force=True))
    assert forced.action["action"] == "triggered" and forced.action["result"]["run_id"] == "run-42"
    run = kfp_standin.calls("POST", f"{mon.KFP}/runs")[-1]["body"]
    assert run["runtime_config"]["parameters"] == {"current_model_uri": f"{bundle}/"}
    assert run["display_name"] == "retrain-v1-drift-2026-11-01_2026-11-02"
    assert len(kfp_standin.calls("POST", f"{mon.KFP}/runs")) == 2


def test_failed_trigger_releases_the_claim(tmp_path, bundle, record_model, mon, github_standin):
    mon.write_cohort(tmp_path, record_model, 60, seed=13, shift=ShiftSpec(stain=0.8))
    wrong = TriggerConfig("github", github=GithubTarget("acme/nope", api_url=github_standin.url))
    res = _run(tmp_path, bundle, mon, trigger=wrong)
    assert res.action["action"] == "failed" and "HTTP 404" in res.action["reason"]
    assert not (tmp_path / "monitoring" / "state" / "v1" / "2026-11-01_2026-11-02.json").exists()
    right = TriggerConfig("github", github=GithubTarget("acme/cscl", api_url=github_standin.url))
    assert _run(tmp_path, bundle, mon, trigger=right).action["action"] == "triggered"


def test_s3_logs_report_and_conditional_state(bundle, record_model, mon, s3_store, kfp_standin):
    storage.s3_client().create_bucket(Bucket="proj")
    mon.write_cohort("s3://proj/p", record_model, 50, seed=14, shift=ShiftSpec(scanner=0.8))
    trig = TriggerConfig("kfp", kfp=KfpTarget(host=kfp_standin.url))
    first = _run("s3://proj/p", bundle, mon, trigger=trig)
    assert first.action["action"] == "triggered"
    assert first.report_uri == "s3://proj/p/monitoring/v1_2026-11-01_2026-11-02"
    body = storage.s3_client().get_object(Bucket="proj", Key=first.report_uri[10:] + "/drift.json")
    assert json.loads(body["Body"].read())["verdict"] == "drift"
    assert _run("s3://proj/p", bundle, mon, trigger=trig).action["action"] == "already_triggered"
    assert len(kfp_standin.calls("POST", f"{mon.KFP}/runs")) == 1
    uri = "s3://proj/p/monitoring/state/v1/x.json"
    assert st.create_state(uri, {"a": 1}) is True
    assert st.create_state(uri, {"a": 2}) is False
    assert st.read_state(uri) == {"a": 1}


def test_labels_file_joins_by_request_id(tmp_path, bundle, record_model, mon):
    recs = mon.write_cohort(tmp_path, record_model, 40, seed=15)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "request_id,er_status\n" + "".join(f"{r['request_id']},positive\n" for r in recs)
    )
    pol = {"min_samples": 20, "signals": {"target": {"min_samples": 20}}}
    res = _run(tmp_path, bundle, mon, policy=pol, labels=str(labels))
    assert res.drift["sample_sizes"]["labelled"] == 40
    assert res.drift["signals"]["target"]["status"] == "drift"  # all positive vs ~50 % in training
    bad = tmp_path / "bad.csv"
    bad.write_text("case,er_status\nx,positive\n")
    with pytest.raises(InputError, match="neither a request_id nor a slide_id"):
        _run(tmp_path, bundle, mon, labels=str(bad))


def test_resolve_window():
    today = dt.date(2026, 11, 10)
    assert resolve_window("2026-11-01", None, None, today) == ("2026-11-01", "2026-11-10")
    assert resolve_window(None, None, 7, today) == ("2026-11-03", "2026-11-09")
    assert resolve_window("", "2026-11-05", 1, today) == ("2026-11-05", "2026-11-05")
    with pytest.raises(InputError, match="--window-days"):
        resolve_window(None, None, None, today)
