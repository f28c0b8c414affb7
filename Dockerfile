# syntax=docker/dockerfile:1
# One image for both parts of sipdispatch: `sipdispatch-proxy` (the SIP data plane, its hot path
# compiled with mypyc) and `sipdispatch-operator` (kopf); the Helm chart picks the command.
#
#   docker build -t sipdispatch:dev .
#
# Not built by the project's tests: the machines they run on have no Docker engine. The same
# steps are what hack/build-native does in a virtualenv (pip wheel with SIPDISPATCH_MYPYC=1).

# --- build: wheels for sipdispatch (mypyc needs a C compiler) and all its dependencies
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN SIPDISPATCH_MYPYC=1 pip wheel --no-cache-dir --wheel-dir /wheels ".[operator]"

# --- run: no compiler, no sources, a non-root user
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "sipdispatch[operator]" \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent sipdispatch
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# SIP (UDP and TCP) and the control API (/healthz, /readyz, /metrics); the operator's liveness
# endpoint is 8080 as well.
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT []
CMD ["sipdispatch-proxy", "--help"]
