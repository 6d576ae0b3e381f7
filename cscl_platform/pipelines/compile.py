"""Compile pipelines into versioned packages: `dist/pipelines/<name>-<version>.yaml`.

Version = package version + git short commit (+ `.dirty` when the working tree has uncommitted
changes), so a package on the Kubeflow server always says which code it runs.
"""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from cscl import __version__
from cscl.io.storage import atomic_path
from cscl.runtime import git_commit
from cscl_platform.pipelines import build


def pipeline_version() -> str:
    """`<package version>-<git short commit>[.dirty]`, e.g. `0.1.0-1a2b3c4` ('nogit' outside a
    git checkout)."""
    return f"{__version__}-{git_commit(short=True) or 'nogit'}"


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
    version = version or pipeline_version()
    pipeline = build(name, cluster=cluster)
    out = package_path(name, out_dir, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp_yaml = tmp.with_suffix(".yaml")
        compiler.Compiler().compile(pipeline, str(tmp_yaml))
        tmp_yaml.replace(tmp)
    return out
