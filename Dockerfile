# The one cscl image: every Kubeflow component (cscl_platform/components/common.py BASE_IMAGE) and the plain
# TorchServe Deployment run it. Build: docker build -t ghcr.io/cscl/cscl:<version> .
#
# CUDA: the PyPI torch 2.14.1 wheel ships its CUDA 12 runtime (nvidia-* wheels), so a GPU node
# needs only the driver (NVIDIA container toolkit); the same image runs on CPU nodes.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GX_ANALYTICS_ENABLED=false \
    MPLBACKEND=Agg

# Java 17 for TorchServe's frontend; tini reaps TorchServe's worker processes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/cscl

# torch/torchvision first and explicitly, the same pair as the Makefile and pyproject.toml.
RUN pip install torch==2.14.1 torchvision==0.29.1

# Then the project with exactly the pins of pyproject.toml and the platform extra (Kubeflow,
# TorchServe, Evidently, Great Expectations); the dev extra (tests) stays out.
COPY pyproject.toml README.md ./
COPY cscl ./cscl
COPY cscl_platform ./cscl_platform
# The InferenceService the deploy component applies (see cscl_platform/components/deploy/logic.py).
COPY manifests/base/serving/kserve/inferenceservice.yaml ./manifests/inferenceservice.yaml
ENV CSCL_ISVC_TEMPLATE=/opt/cscl/manifests/inferenceservice.yaml
RUN pip install "./[platform]" \
    && useradd --create-home --uid 1000 cscl

USER 1000:1000
WORKDIR /home/cscl
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["cscl", "--help"]
