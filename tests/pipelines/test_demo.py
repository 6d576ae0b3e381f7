"""Pieces of `make demo` (the whole pipeline run is tests/pipelines/test_pipelines_local.py)."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from cscl_platform.demo import local_s3, mirror_store, pick_tasks


def test_local_s3_sets_and_restores_environment():
    before = os.environ.get("AWS_ENDPOINT_URL")
    with local_s3() as url:
        assert url.startswith("http://127.0.0.1:")
        assert os.environ["AWS_ENDPOINT_URL"] == url
        assert os.environ["AWS_ACCESS_KEY_ID"]  # dummy, set only while the demo runs
    assert os.environ.get("AWS_ENDPOINT_URL") == before


def test_pick_tasks(tmp_path):
    lab = pd.DataFrame(
        {
            "case_id": list("abcd"),
            "subtype": ["LumA", "LumA", "LumB", "LumB"],
            "er_status": ["positive"] * 4,  # one class: not evaluable
            "her2_status": ["positive", "negative", "negative", "negative"],  # 1 < folds
            "os_time": [1.0, 2, 3, 4],
            "os_event": [1, 1, 0, 0],
        }
    )
    lab.to_csv(tmp_path / "labels.csv", index=False)
    assert pick_tasks(tmp_path / "labels.csv", folds=2) == "subtype,os"
    lab.drop(columns=["subtype", "os_event", "os_time"]).to_csv(tmp_path / "l2.csv", index=False)
    with pytest.raises(ValueError, match="no task"):
        pick_tasks(tmp_path / "l2.csv")


def test_mirror_store(s3_endpoint, bucket, tmp_path):
    from cscl.io import storage

    storage.write_bytes(f"s3://{bucket}/p/models/m/1/model.mar", b"x")
    storage.write_bytes(f"s3://{bucket}/p/features/h/a.h5", b"y")
    files = mirror_store(f"s3://{bucket}/p", tmp_path)  # the store: AWS_ENDPOINT_URL (local_s3)
    assert len(files) == 2
    assert (tmp_path / bucket / "p" / "models" / "m" / "1" / "model.mar").read_bytes() == b"x"


def test_task_output_goes_to_the_log_and_its_tail_shows_on_failure(tmp_path, capfd):
    """kfp.local's tasks are subprocesses: their output must leave the demo's story (fd level)."""
    import os
    import subprocess
    import sys

    import pytest

    from cscl_platform.demo import _output_to

    log = tmp_path / "pipeline.log"
    with _output_to(log):
        os.write(1, b"from the demo process\n")
        subprocess.run([sys.executable, "-c", "import sys; print('task out'); "
                        "print('task err', file=sys.stderr)"], check=True)  # fmt: skip
    out, err = capfd.readouterr()
    assert "task out" not in out + err and "from the demo process" not in out
    assert {"from the demo process", "task out", "task err"} <= set(log.read_text().split("\n"))
    with pytest.raises(RuntimeError), _output_to(log):
        os.write(2, b"the line before the failure\n")
        raise RuntimeError("boom")
    out, _ = capfd.readouterr()
    assert "last lines of" in out and "the line before the failure" in out
    print("fds are back")
    assert "fds are back" in capfd.readouterr().out


def test_the_gate_decision_is_said_in_words(capsys):
    from cscl_platform.demo import _say_gate

    _say_gate({"quality_score": 0.61, "gate_min_score": 0.6, "gate_passed": 1.0})
    out = capsys.readouterr().out
    assert "score 0.610" in out and "→ released" in out and "on purpose" not in out
    _say_gate(
        {
            "quality_score": 0.29,
            "gate_min_score": 0.0,
            "gate_passed": 1.0,
            "gate_baseline_score": 0.35,
            "gate_min_gain": -1.0,
        }
    )
    out = capsys.readouterr().out
    assert (
        "→ released" in out and "relaxes the gate on purpose" in out and "mean-pool (score" in out
    )
    _say_gate({"quality_score": 0.41, "gate_min_score": 0.6, "gate_passed": 0.0})
    assert "→ not released" in capsys.readouterr().out
