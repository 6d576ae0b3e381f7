"""The platform layer: Kubeflow components and pipelines, TorchServe serving, Great Expectations
validation, Evidently monitoring and the platform CLI commands.

It imports `cscl` (the library); `cscl` never imports it (enforced by `lint-imports`, see
docs/ARCHITECTURE.md). Each part needs its extra: `pip install 'cscl[platform]'`.
"""
