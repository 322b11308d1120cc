# syntax=docker/dockerfile:1
# holoburn for x86_64 with an NVIDIA GPU: Ubuntu 24.04, CUDA 13, Holoscan 4.6 (holoscan-cu13),
# TensorRT from the Python package registry your pip is configured for.
#
# Not built in holoburn's CI (no Docker engine runs there): tests/test_deploy.py lints this file
# with hadolint and checks that everything it copies and every holoburn command it runs exists.
#
# Build. TensorRT's wheels are not all on PyPI: hand the build your pip configuration (the index
# or mirror that serves them, with any credentials) as a secret, so that it never lands in a layer:
#   DOCKER_BUILDKIT=1 docker build -t holoburn:x86 \
#     --secret id=pip.conf,src="$HOME/.config/pip/pip.conf" \
#     --build-arg TENSORRT_REQUIREMENT=tensorrt-cu13==11.4.0.106 .
# (TENSORRT_REQUIREMENT="" builds without TensorRT: `auto` then falls back to ONNX Runtime.)
#
# Run: the GPU, the camera passed through (and the video group that may open it), the stack size
# Holoscan wants, engines cached in a named volume, outputs in ./out (writable by uid 10001):
#   docker run --rm --gpus all --device /dev/video0 --group-add video \
#     --ulimit stack=33554432 --network host \
#     -v holoburn-engines:/var/cache/holoburn/engines -v "$PWD/out:/data/out" \
#     holoburn:x86 run --config bedside-x86.yaml --source camera:/dev/video0 --out /data/out
# --network host keeps the metrics endpoint on the host's loopback (127.0.0.1:9479) and lets
# Holoscan fragments on other hosts reach this one; nothing is published to the network otherwise.
# A recorded video instead of the camera: -v "$PWD/videos:/data/in:ro" ... --source video:/data/in/case.mp4

ARG CUDA_IMAGE=nvcr.io/nvidia/cuda:13.0.1-runtime-ubuntu24.04

# ---- build: a virtual environment with holoburn, its model and its dependencies ----
FROM ${CUDA_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Ubuntu's archive keeps only the current patch release of a package: pinning one breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/holoburn
ENV PATH=/opt/holoburn/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY clinical ./clinical
COPY configs ./configs
COPY engines ./engines
COPY media ./media
COPY operators ./operators
COPY processing ./processing
# holoscan-cu13 4.6.0 and the rest of pyproject.toml's dependencies come from PyPI.
RUN pip install --no-cache-dir /src
ARG TENSORRT_REQUIREMENT=tensorrt-cu13==11.4.0.106
# The pin is in TENSORRT_REQUIREMENT, out of hadolint's sight.
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip.conf,required=false \
    if [ -n "$TENSORRT_REQUIREMENT" ]; then \
        PIP_CONFIG_FILE=/run/secrets/pip.conf pip install --no-cache-dir "$TENSORRT_REQUIREMENT"; \
    fi

# ---- runtime ----
FROM ${CUDA_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libjpeg-turbo8: Holoscan's V4L2 capture decodes MJPEG cameras with it; libvulkan1: Holoviz.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libjpeg-turbo8 libvulkan1 \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid, in the video group so that a passed-through camera can be opened.
RUN groupadd --gid 10001 holoburn \
    && useradd --no-log-init -l --uid 10001 --gid 10001 --groups video --create-home holoburn \
    && mkdir -p /var/cache/holoburn/engines /data/out \
    && chown -R holoburn:holoburn /var/cache/holoburn /data
COPY --from=build /opt/holoburn /opt/holoburn
COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/holoburn-entrypoint
ENV PATH=/opt/holoburn/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOLOBURN_ENGINE_CACHE=/var/cache/holoburn/engines \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics,video
# numeric, so that a runtime (Kubernetes' runAsNonRoot) can tell it is not root
USER 10001:10001
WORKDIR /data
# Fail the build, not the first start, if the package, its presets or the config checker are missing.
RUN holoburn config check bedside-x86.yaml
VOLUME ["/var/cache/holoburn/engines"]
# Healthy while the metrics endpoint (metrics.enabled in the config) shows frames in the last 30 s.
# The start period covers the TensorRT engine build of a first start.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 \
    CMD ["holoburn", "health", "--max-age", "30"]
ENTRYPOINT ["/usr/local/bin/holoburn-entrypoint"]
CMD ["run", "--config", "bedside-x86.yaml", "--source", "camera:/dev/video0", "--out", "/data/out"]
