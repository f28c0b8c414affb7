# One image for both parts of sipdispatch: `sipdispatch-proxy` (the SIP data plane, its hot path
# compiled with mypyc) and `sipdispatch-operator` (kopf); the Helm chart picks the command.
# Built and smoke-tested by
#
#   hack/build-image --tag registry.example.com/voice/sipdispatch:0.1.0
#
# which makes the two bases below from Debian's packages with mmdebstrap (bookworm minbase +
# Debian's python3; no image registry needed), builds this file with buildah, runs a call
# through the proxy in the image and prints its size (docs/install.md). Another builder can
# use the same two bases (the root file systems cached in
# ~/.cache/sipdispatch/image/{build,run}-base-<key>.tar, imported with e.g. `docker import`)
# named by the BUILD_BASE and RUN_BASE build arguments; only buildah's build is tested.
ARG BUILD_BASE=localhost/sipdispatch-build-base
ARG RUN_BASE=localhost/sipdispatch-run-base

# --- build: the mypyc-compiled wheel and every dependency, in a virtualenv on Debian's Python
# (the run base has the same python3 package, so the same ABI)
FROM ${BUILD_BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/sipdispatch
WORKDIR /src
# The dependencies first, in a layer of their own that survives source changes.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["operator"]))' >requirements.txt \
    && /opt/sipdispatch/bin/pip install --quiet --requirement requirements.txt
COPY setup.py README.md ./
COPY src ./src
RUN SIPDISPATCH_MYPYC=1 /opt/sipdispatch/bin/pip wheel --quiet --no-deps --wheel-dir /wheels . \
    && /opt/sipdispatch/bin/pip install --quiet --no-deps /wheels/sipdispatch-*.whl \
    && /opt/sipdispatch/bin/pip check \
    && /opt/sipdispatch/bin/pip uninstall --quiet --yes pip setuptools

# --- run: Debian's python3, the virtualenv, a non-root user; no compiler, no sources, no pip
FROM ${RUN_BASE}
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin sipdispatch
COPY --from=build /opt/sipdispatch /opt/sipdispatch
ENV PATH=/opt/sipdispatch/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# SIP (UDP and TCP) and the control API (/healthz, /readyz, /metrics); the operator's liveness
# endpoint is 8080 as well.
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT []
CMD ["sipdispatch-proxy", "--help"]
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sipdispatch" \
      org.opencontainers.image.description="Kubernetes-native SIP load balancer: sipdispatch-proxy and sipdispatch-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="debian:bookworm (minbase, made with mmdebstrap)"
