# syntax=docker/dockerfile:1.7
#
# ben2-worker: the native RunPod serverless worker (no ComfyUI server). Two targets:
#
#   docker buildx build --target simple -t ben2-worker:simple .   BEN2 cut-outs only: no torch, no LLM
#   docker buildx build --target full   -t ben2-worker:full   .   + Florence-2, NudeNet, Llama 3.1 (default)
#
# Layout of the result: models in /opt/models (one layer per model, before any code, bytes
# independent of when the build ran, so a code change never re-pushes them), Python in
# /opt/venv (one layer), the project (one small layer), a non-root user, and the self-check as
# the last build step. Build arguments, sizes and endpoint settings: docs/deploy.md.
#
# CUDA: 12.8 user-space libraries from NVIDIA's pinned wheels (docker/cuda12-pins.txt), ONE copy
# shared by onnxruntime-gpu, torch and llama.cpp, on the small nvidia/cuda *base* image; the
# cuDNN runtime image would add its own second copy (~2.7 GB). Host driver >= 525 (CUDA 12.x
# minor-version compatibility); 570+ recommended.

ARG CUDA_VERSION=12.8.1
ARG UBUNTU=ubuntu24.04
# Pin by digest for reproducible builds: --build-arg RUNTIME_BASE=nvidia/cuda:12.8.1-base-ubuntu24.04@sha256:<digest>
ARG RUNTIME_BASE=nvidia/cuda:${CUDA_VERSION}-base-${UBUNTU}
ARG BUILD_BASE=nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU}

# ------------------------------------------------------------------------------------------------
# os: the runtime operating system, shared by every stage that runs the project's Python.
FROM ${RUNTIME_BASE} AS os
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore
# Ubuntu's python3.12 (the interpreter every wheel here is built for); libgomp1 for llama.cpp's
# OpenMP; nothing else. Versions follow the Ubuntu archive; pin the base image by digest instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ------------------------------------------------------------------------------------------------
# llama-build: llama-cpp-python compiled for CUDA. Only its wheel leaves this stage.
FROM ${BUILD_BASE} AS llama-build
ARG CUDA_ARCHITECTURES="86;89;90"
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev build-essential cmake ninja-build git \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/lock.txt /src/requirements/lock.txt
COPY docker/build-llama-wheel.sh /src/docker/build-llama-wheel.sh
RUN --mount=type=cache,target=/root/.cache/pip \
    python3.12 -m venv /opt/build \
    && PYTHON=/opt/build/bin/python CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" /src/docker/build-llama-wheel.sh /wheels

# ------------------------------------------------------------------------------------------------
# fetcher: what downloads the models: the model store and its CLI, with the settings module (the
# HF_* variables) and the atomic writer they use; none of the rest of the code, so editing it
# never re-runs a download.
FROM os AS fetcher
COPY requirements/lock.txt /src/requirements/lock.txt
COPY pyproject.toml /src/pyproject.toml
COPY docker/install-python-deps.sh docker/pyproject-deps.py docker/cuda12-pins.txt docker/fetch-models.sh /src/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    PYTHON=python3.12 /src/docker/install-python-deps.sh fetcher /opt/fetch
COPY src/ben2_worker/__init__.py src/ben2_worker/errors.py src/ben2_worker/config.py src/ben2_worker/files.py src/ben2_worker/options.py /opt/fetch-src/ben2_worker/
COPY src/ben2_worker/models/ /opt/fetch-src/ben2_worker/models/
ENV PYTHONPATH=/opt/fetch-src PYTHON=/opt/fetch/bin/python
# One stage (so one layer, fetched in parallel) per model. Optional: --build-arg
# HF_ENDPOINT=https://<mirror>; a token as a BuildKit secret, never an ARG:
#   --secret id=hf_token,env=HF_TOKEN   (NudeNet comes from its PyPI wheel, not the Hub)

FROM fetcher AS model-ben2
ARG HF_ENDPOINT
RUN --mount=type=secret,id=hf_token,required=false /src/docker/fetch-models.sh /models ben2

FROM fetcher AS model-nudenet
RUN /src/docker/fetch-models.sh /models nudenet

FROM fetcher AS model-florence2
ARG HF_ENDPOINT
RUN --mount=type=secret,id=hf_token,required=false /src/docker/fetch-models.sh /models florence2

FROM fetcher AS model-llama
ARG HF_ENDPOINT
RUN --mount=type=secret,id=hf_token,required=false /src/docker/fetch-models.sh /models llama

# ------------------------------------------------------------------------------------------------
# venv-*: the Python dependencies (never the project's code), from pyproject.toml + the lock.
FROM os AS venv-simple
COPY requirements/lock.txt /src/requirements/lock.txt
COPY pyproject.toml /src/pyproject.toml
COPY docker/install-python-deps.sh docker/pyproject-deps.py docker/cuda12-pins.txt /src/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    PYTHON=python3.12 /src/docker/install-python-deps.sh simple /opt/venv

FROM os AS venv-full
# cuda: torch 2.10.0 (CUDA 12.8) from PyPI, Florence-2 on the GPU.  cpu: the lock's CPU build
# (the version the tests run), Florence-2 on the CPU, ~2 GB smaller image (docs/deploy.md).
ARG TORCH_VARIANT=cpu
COPY requirements/lock.txt /src/requirements/lock.txt
COPY pyproject.toml /src/pyproject.toml
COPY docker/install-python-deps.sh docker/pyproject-deps.py docker/cuda12-pins.txt /src/docker/
COPY --from=llama-build /wheels /wheels
RUN --mount=type=cache,target=/root/.cache/pip \
    PYTHON=python3.12 TORCH_VARIANT="${TORCH_VARIANT}" /src/docker/install-python-deps.sh full /opt/venv /wheels

# ------------------------------------------------------------------------------------------------
# app-wheel: the project itself, as a wheel. The only stage that reads src/ as a whole.
FROM os AS app-wheel
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN --mount=type=cache,target=/root/.cache/pip \
    python3.12 -m venv /opt/build \
    && /opt/build/bin/python -m pip wheel --no-deps --wheel-dir /wheels /src

# ------------------------------------------------------------------------------------------------
# runtime: what both targets share (user, entry point, files that are not models or code).
# BEN2_WORKER_DEVICE=gpu: built for a GPU, the worker refuses to start when it cannot use one
# (never a silent CPU fallback); a CPU endpoint sets BEN2_WORKER_DEVICE=auto (docs/deploy.md).
FROM os AS runtime
RUN groupadd --system --gid 10001 ben2 \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/ben2 --shell /usr/sbin/nologin ben2
WORKDIR /opt/ben2-worker
ENV PATH=/opt/venv/bin:${PATH} \
    BEN2_WORKER_MODELS=/opt/models \
    BEN2_WORKER_WORKFLOWS=/opt/ben2-worker/workflows \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BEN2_WORKER_DEVICE=gpu
LABEL org.opencontainers.image.title="ben2-worker" \
      org.opencontainers.image.description="BEN2 background removal with a fail-closed safety stack, RunPod serverless worker" \
      org.opencontainers.image.licenses="Apache-2.0 AND MIT AND AGPL-3.0-only AND LicenseRef-Llama-3.1-Community"
COPY --chmod=0755 docker/entrypoint.sh docker/register-cuda-libs.sh /opt/ben2-worker/bin/
ENTRYPOINT ["/opt/ben2-worker/bin/entrypoint.sh"]

# ------------------------------------------------------------------------------------------------
# simple: BEN2 only. CPU endpoints can run it too (onnxruntime falls back to the CPU provider).
FROM runtime AS simple
COPY --link --from=model-ben2 /models/ben2_onnx /opt/models/ben2_onnx
COPY --link --from=venv-simple /opt/venv /opt/venv
RUN /opt/ben2-worker/bin/register-cuda-libs.sh /opt/venv/lib/python3.12/site-packages
RUN --mount=type=bind,from=app-wheel,source=/wheels,target=/tmp/app-wheels \
    pip install --no-cache-dir --no-deps --no-index --no-compile /tmp/app-wheels/*.whl \
    && python -m compileall -q --invalidation-mode unchecked-hash /opt/venv/lib/python3.12/site-packages/ben2_worker
COPY workflows/ /opt/ben2-worker/workflows/
COPY LICENSES/ /opt/ben2-worker/LICENSES/
COPY test_input.json /opt/ben2-worker/test_input.json
ENV BEN2_WORKER_PIPELINES=simple
# Last step: the self-check (models' sha256 recorded as stamps, CUDA provider and its libraries,
# workflow node types, workflows). A failure names the file and the fix, and stops the build.
RUN python -m ben2_worker.cli.selfcheck --pipelines simple --require-gpu --image-build
USER 10001:10001

# ------------------------------------------------------------------------------------------------
# full (default target): + Florence-2 captions, NudeNet, the Llama 3.1 safety classifier.
FROM runtime AS full
COPY --link --from=model-ben2 /models/ben2_onnx /opt/models/ben2_onnx
COPY --link --from=model-nudenet /models/nudenet /opt/models/nudenet
COPY --link --from=model-florence2 /models/LLM /opt/models/LLM
COPY --link --from=model-llama /models/llm /opt/models/llm
COPY --link --from=venv-full /opt/venv /opt/venv
RUN /opt/ben2-worker/bin/register-cuda-libs.sh /opt/venv/lib/python3.12/site-packages
RUN --mount=type=bind,from=app-wheel,source=/wheels,target=/tmp/app-wheels \
    pip install --no-cache-dir --no-deps --no-index --no-compile /tmp/app-wheels/*.whl \
    && python -m compileall -q --invalidation-mode unchecked-hash /opt/venv/lib/python3.12/site-packages/ben2_worker
COPY workflows/ /opt/ben2-worker/workflows/
# Llama 3.1 Community License: the licence, the required notice and "Built with Llama" travel
# with the weights (docs/licences.md).
COPY LICENSES/ /opt/ben2-worker/LICENSES/
COPY test_input.json /opt/ben2-worker/test_input.json
ENV BEN2_WORKER_PIPELINES=simple,full
RUN python -m ben2_worker.cli.selfcheck --pipelines simple,full --require-gpu --image-build
USER 10001:10001
