"""What every cscl component shares: the project image and the decorator that uses it.

Why one image: the components are thin wrappers over the `cscl` package, so the image that has
cscl installed (Dockerfile at the repository root) runs all of them; `packages_to_install` stays
empty and KFP is not pip-installed at run time (`install_kfp_package=False`, kfp is in the image).
The local runner (`kfp.local.SubprocessRunner(use_venv=False)`) ignores the image and runs the
same code with the installed package.
"""

from __future__ import annotations

import functools
import os

from kfp import dsl

from cscl import __version__

IMAGE_REPOSITORY = "ghcr.io/cscl/cscl"
# Overridable so a fork or an air-gapped registry can compile against its own build.
BASE_IMAGE = os.environ.get("CSCL_IMAGE", f"{IMAGE_REPOSITORY}:{__version__}")

# Kubernetes names the cluster manifests (manifests/base) create and the pipelines refer to.
S3_SECRET_NAME = "cscl-s3-credentials"
S3_SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
}
GPU_ACCELERATOR = "nvidia.com/gpu"
GPU_NODE_SELECTOR = ("cscl.io/node-pool", "gpu")

cscl_component = functools.partial(
    dsl.component, base_image=BASE_IMAGE, packages_to_install=[], install_kfp_package=False
)
"""`@cscl_component` = `@dsl.component` against the project image with nothing installed at run time."""
