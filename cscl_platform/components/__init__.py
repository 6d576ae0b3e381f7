"""Kubeflow Pipelines v2 components: thin typed wrappers over tested `cscl` functions.

One folder per component (`component.py`, `README.md`, `test_component.py`). All components run
in the project image (`components.common.BASE_IMAGE`); the local runner uses the installed package.
"""
