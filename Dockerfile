# ctloop's images, one file, two targets (`make image` builds both):
#   runtime  ghcr.io/ctloop/ctloop:<version>          train, evaluate, promote (the WorkflowTemplate's steps), serve;
#                                                     torch from PyPI (CUDA build, runs on CPU too)
#   control  ghcr.io/ctloop/ctloop-control:<version>  MLflow server (PostgreSQL, S3), drift monitor, sensors; no torch
# Dependencies are the pinned sets in docker/*.lock (`python tools/lock.py` writes them from the tested
# environment). Build with BuildKit. Where the base or the package indexes need this machine's apt sources or CA
# bundle, pass them as secrets (`--secret id=apt_sources,src=...`, `--secret id=ca,src=...`): they are mounted
# for the one RUN that needs them and never land in a layer.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS base
ARG DEBIAN_FRONTEND=noninteractive
RUN --mount=type=secret,id=apt_sources,target=/etc/apt/sources.list.d/build-host.sources \
    apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && groupadd --gid 10001 ctloop \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin ctloop \
    && install -d -o 10001 -g 10001 /ctloop
ENV PATH=/opt/ctloop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The pip cache is a BuildKit cache mount: a rebuild after a lock change downloads only what changed.
FROM base AS venv-control
COPY docker/requirements-control.lock /tmp/requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/ctloop \
    && /opt/ctloop/bin/pip install --no-deps -r /tmp/requirements.lock

# torch and its CUDA libraries (~4.5 GB) in a layer of their own, on top of the control image's set.
FROM venv-control AS venv-runtime
COPY docker/requirements.lock /tmp/requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && /opt/ctloop/bin/pip install --no-deps -r /tmp/requirements.lock

# ctloop itself as a wheel: a source change rebuilds only this stage and the images' last layer.
FROM venv-control AS wheel
COPY pyproject.toml README.md /src/
COPY ctloop /src/ctloop
COPY app /src/app
COPY trainer /src/trainer
COPY workflows /src/workflows
COPY sensors /src/sensors
COPY monitors /src/monitors
COPY deploy /src/deploy
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && /opt/ctloop/bin/pip wheel --no-deps --wheel-dir /wheels /src

FROM venv-control AS control
RUN --mount=type=bind,from=wheel,source=/wheels,target=/tmp/wheels \
    /opt/ctloop/bin/pip install --no-deps --no-cache-dir /tmp/wheels/*.whl
COPY docker/healthcheck.py /usr/local/lib/ctloop-healthcheck.py
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ctloop-control" \
      org.opencontainers.image.description="ctloop without torch: MLflow server (PostgreSQL, S3), drift monitor, sensors" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# The MLflow server of k8s/base/mlflow.yaml; its allowed hosts include localhost.
ENV CTLOOP_HEALTHCHECK_URL=http://localhost:5000/health
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "/usr/local/lib/ctloop-healthcheck.py"]
USER 10001:10001
WORKDIR /ctloop
ENTRYPOINT ["tini", "--"]
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]

FROM venv-runtime AS runtime
RUN --mount=type=bind,from=wheel,source=/wheels,target=/tmp/wheels \
    /opt/ctloop/bin/pip install --no-deps --no-cache-dir /tmp/wheels/*.whl
COPY docker/healthcheck.py /usr/local/lib/ctloop-healthcheck.py
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ctloop" \
      org.opencontainers.image.description="ctloop runtime: the retrain workflow's steps (torch, CUDA-capable) and model serving" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# `ctloop serve --port 8080`, as k8s/base/serving.yaml runs it; a workflow step sets it empty.
ENV CTLOOP_HEALTHCHECK_URL=http://127.0.0.1:8080/health
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "/usr/local/lib/ctloop-healthcheck.py"]
USER 10001:10001
WORKDIR /ctloop
ENTRYPOINT ["tini", "--"]
CMD ["ctloop", "--help"]
