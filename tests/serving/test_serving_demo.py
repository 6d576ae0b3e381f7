"""`make demo`'s serving step: the released .mar served by a real TorchServe, one slide predicted
by URI as a client would, and its inference-log record written under the project prefix."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from cscl_platform.serving.demo import demo_step, summarize_answer


@pytest.mark.torchserve
def test_demo_step_serves_released_model_and_predicts_one_slide(packaged, slide, tmp_path, capsys):
    released = tmp_path / "proj" / "models" / "cscl" / "0.1.0_test"
    released.mkdir(parents=True)
    shutil.copy(packaged["mar"], released / "model.mar")
    cohort = slide.parent.parent
    ctx = SimpleNamespace(
        model_uri=str(released) + "/",
        out_dir=tmp_path / "demo",
        cohort_dir=cohort,
        manifest_uri=str(cohort / "manifest.csv"),
        project_prefix=str(tmp_path / "proj"),
        endpoint_url="",
    )
    answer = demo_step(ctx)
    out = capsys.readouterr().out
    assert answer["model_version"] == packaged["meta"]["version"]
    assert len(answer["embedding"]) > 0 and answer["qc"]["tissue_area_mm2"] > 0
    assert set(answer["predictions"]) >= {"er_status", "subtype", "os"}
    assert '"model_version"' in out and "predictions/cscl" in out
    logs = list((tmp_path / "proj" / "inference-logs").rglob("*.json"))
    assert len(logs) == 1, "the prediction is logged for drift monitoring"
    assert json.loads(logs[0].read_text())["model_version"] == answer["model_version"]


def test_demo_step_skips_without_a_released_model(tmp_path, capsys):
    assert demo_step(SimpleNamespace(model_uri=None, out_dir=tmp_path)) is None
    assert "skipped" in capsys.readouterr().out


def test_summary_shortens_the_embedding():
    s = summarize_answer(
        {"model_version": "v", "embedding": [0.1] * 512, "top_patches": [1, 2, 3, 4]}
    )
    assert s["embedding"].startswith("512 floats") and s["top_patches"] == [1, 2, 3]
    assert "triage" not in s  # a model without the IHC pre-screen
    t = {"decision": "skip IHC", "probability_positive": 0.031, "threshold": 0.12,
         "target_sensitivity": 0.95, "positive_class": "positive", "note": "…"}  # fmt: skip
    s = summarize_answer({"embedding": [], "triage": {"er_status": t}})
    assert s["triage"] == {"er_status": "skip IHC (P 0.03, threshold 0.12 for 95 % sensitivity)"}
