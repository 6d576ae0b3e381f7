"""Compile pipelines into versioned packages: `dist/pipelines/<name>-<version>.yaml`.

Version = package version + git short commit (+ `.dirty` when the working tree has uncommitted
changes), so a package on the Kubeflow server always says which code it runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from cscl import __version__

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit(short: bool = True) -> str:
    """Commit of the checkout this code comes from ('nogit' outside a git checkout)."""
    cmd = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
    try:
        sha = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "cscl", "cscl_platform"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "nogit"
    return f"{sha}.dirty" if dirty else sha


def pipeline_version() -> str:
    """`<package version>-<git short commit>`, e.g. `0.1.0-1a2b3c4`."""
    return f"{__version__}-{git_commit()}"


def package_path(name: str, out_dir: str | Path = "dist/pipelines", version: str | None = None):
    return Path(out_dir) / f"{name}-{version or pipeline_version()}.yaml"


def compile_pipeline(
    name: str,
    out_dir: str | Path = "dist/pipelines",
    *,
    cluster: bool = True,
    version: str | None = None,
) -> Path:
    """Compile pipeline `name` to `<out_dir>/<name>-<version>.yaml`; returns the path.

    `cluster=True` (default: packages are for a Kubeflow server) includes GPU requests, node
    placement and S3 credentials from the `cscl-s3-credentials` Secret.
    """
    from kfp import compiler

    from cscl.io.storage import atomic_path
    from cscl_platform.pipelines import build

    version = version or pipeline_version()
    pipeline = build(name, cluster=cluster)
    out = package_path(name, out_dir, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp_yaml = tmp.with_suffix(".yaml")
        compiler.Compiler().compile(pipeline, str(tmp_yaml))
        tmp_yaml.replace(tmp)
    return out
