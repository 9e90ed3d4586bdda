# seqserve runtime images: the service, its runtime dependencies and the bundled models.
#
#   docker build --target cpu  -t localhost/seqserve:cpu  .   # python slim + onnxruntime (the default target)
#   docker build --target cuda -t localhost/seqserve:cuda .   # NVIDIA CUDA 13 + cuDNN 9 runtime + onnxruntime-gpu
#
# The base images are build arguments (BASE_IMAGE, CUDA_BASE_IMAGE), so a mirror, a
# pinned digest or a locally built base can be swapped in; deploy/deploy_test.sh builds
# the CPU target on a Debian bookworm base made with debootstrap. Any base with python3
# (>= 3.11) and its venv module works. No torch, no compiler, no pip in the final images:
# the virtual environment is built in a separate stage and copied over, from the lock
# files (requirements.lock, requirements-gpu.lock: exact versions, hash-checked).
#
# The models are in the image; docker-compose.yml mounts ./models over them read-only, so
# a model can be changed without a rebuild (README, "Operations").

ARG BASE_IMAGE=docker.io/library/python:3.12-slim-bookworm
ARG CUDA_BASE_IMAGE=docker.io/nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- CUDA: dependencies
FROM ${CUDA_BASE_IMAGE} AS cuda-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# The locked runtime dependencies, hash-checked (make lock writes requirements-gpu.lock).
COPY requirements-gpu.lock /build/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --only-binary :all: -r /build/requirements-gpu.lock \
    && /opt/venv/bin/pip uninstall -y pip setuptools \
    && find /opt/venv -name tests -type d -prune -exec rm -rf {} +

# ---------------------------------------------------------------- CUDA: runtime
FROM ${CUDA_BASE_IMAGE} AS cuda
ENV DEBIAN_FRONTEND=noninteractive
# The venv's interpreter is the base's python3; the NVIDIA base brings CUDA 13 and cuDNN 9,
# which the onnxruntime-gpu wheel does not bundle.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 seqserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /srv/seqserve --shell /usr/sbin/nologin seqserve
COPY --from=cuda-deps /opt/venv /opt/venv
# SEQSERVE_DEVICE=cuda: a GPU replica without a usable GPU fails at start-up (never ready)
# instead of silently serving from the CPU; set it to auto to allow the fallback.
# ORT_*TELEMETRY*: see the CPU stage.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    ORT_TELEMETRY_DISABLED=1 \
    SEQSERVE_HOST=0.0.0.0 \
    SEQSERVE_PORT=8000 \
    SEQSERVE_MODELS_DIR=/srv/seqserve/models \
    SEQSERVE_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /srv/seqserve
COPY deploy/image/healthcheck.py ./healthcheck.py
COPY models ./models
COPY seqcore ./seqcore
COPY app ./app
RUN python -m compileall -q app
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 \
    CMD ["python", "/srv/seqserve/healthcheck.py"]
CMD ["python", "-m", "app"]

# ---------------------------------------------------------------- CPU: dependencies
FROM ${BASE_IMAGE} AS cpu-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Only the lock file: this layer is rebuilt when the dependencies change, not the code.
# requirements.lock pins every package with its hashes (make lock, from pyproject.toml).
COPY requirements.lock /build/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --only-binary :all: -r /build/requirements.lock \
    && /opt/venv/bin/pip uninstall -y pip setuptools \
    && find /opt/venv -name tests -type d -prune -exec rm -rf {} +

# ---------------------------------------------------------------- CPU: runtime
# The last stage, so a plain `docker build .` builds the CPU image.
FROM ${BASE_IMAGE} AS cpu
RUN groupadd --system --gid 10001 seqserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /srv/seqserve --shell /usr/sbin/nologin seqserve
COPY --from=cpu-deps /opt/venv /opt/venv
# ONNX Runtime's usage telemetry (in its recent Linux wheels) is off in a server image:
# ORT_DISABLE_TELEMETRY is the switch of onnxruntime 1.32, ORT_TELEMETRY_DISABLED that of
# later releases.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    ORT_TELEMETRY_DISABLED=1 \
    SEQSERVE_HOST=0.0.0.0 \
    SEQSERVE_PORT=8000 \
    SEQSERVE_MODELS_DIR=/srv/seqserve/models \
    SEQSERVE_DEVICE=cpu
WORKDIR /srv/seqserve
# Code and models stay owned by root: the service user can read them, not change them.
COPY deploy/image/healthcheck.py ./healthcheck.py
COPY models ./models
COPY seqcore ./seqcore
COPY app ./app
RUN python -m compileall -q app
USER 10001:10001
EXPOSE 8000
# uvicorn drains on SIGTERM within SEQSERVE_SHUTDOWN_GRACE_S (20 s by default): give the
# container a longer stop timeout than that (compose: stop_grace_period: 30s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "/srv/seqserve/healthcheck.py"]
CMD ["python", "-m", "app"]
