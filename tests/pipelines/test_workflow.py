"""The CI retraining workflow, checked offline: GitHub's workflow JSON schema (vendored in
check-jsonschema, no network), plus what it must do: compile, upload a version, start the
retraining run with secrets from the secret store, and accept the drift monitor's dispatch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"


def _check_jsonschema() -> str:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("check-jsonschema not installed (dev dependency)")
    return exe


def _lint(path: Path) -> subprocess.CompletedProcess:
    cmd = [_check_jsonschema(), "--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_workflow_matches_github_schema():
    out = _lint(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["jobs"]["retrain"]["timeout-minutes"] = "soon"  # must be a number or an expression
    del doc["jobs"]["retrain"]["runs-on"]
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(doc))
    assert _lint(bad).returncode != 0


def test_workflow_compiles_submits_with_secrets_and_accepts_monitor_dispatch():
    doc = yaml.safe_load(WORKFLOW.read_text())
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads the key `on` as True
    inputs = on["workflow_dispatch"]["inputs"]
    assert {"model_version", "reason"} <= set(inputs)  # what cscl.monitoring sends
    steps = doc["jobs"]["retrain"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "cscl pipeline compile" in runs
    assert "cscl pipeline submit" in runs and "--name retraining" in runs
    submit = next(s for s in steps if "cscl pipeline submit" in s.get("run", ""))
    assert submit["env"]["KFP_HOST"] == "${{ secrets.KFP_HOST }}"
    assert submit["env"]["KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
    assert doc["permissions"] == {"contents": "read"}
    # user-controlled inputs reach the shell only through environment variables
    assert "${{ inputs" not in runs and "${{ github.event" not in runs


def test_workflow_pins_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    deps = project["dependencies"] + [d for group in extras.values() for d in group]
    deps = [d for d in deps if "==" in d]
    pins = {d.split("==")[0].strip().lower(): d.split("==")[1].split()[0] for d in deps}
    import re

    text = WORKFLOW.read_text()
    found = re.findall(r"([a-z0-9\-]+)==([0-9][^\s\"']*)", text)
    assert found, "the workflow installs pinned tooling"
    for name, ver in found:
        assert pins.get(name) == ver, (
            f"{name}=={ver} in the workflow, {pins.get(name)} in pyproject"
        )
