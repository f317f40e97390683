# syntax=docker/dockerfile:1
# Goalkeeper's image: the daemon in a virtualenv, nmap from Debian, tini as PID 1.
#
# The build stage installs the package and its dependencies; the final stage gets only the
# virtualenv, so no compiler, pip cache or source tree ships. The simulated cloud (goalkeeper_sim/
# and its `sim` extra, aiosmtpd) is a development tool and is neither copied nor installed. No secret is baked in: they come
# from the environment at run time (docs/operations.md).
#
# nmap ships twice. /usr/bin/nmap is Debian's, untouched: the "restricted" profile runs it for
# connect scans (-sT) with every capability dropped. /usr/lib/goalkeeper/nmap-privileged/nmap is a
# copy carrying the file capability cap_net_raw+eip, for SYN and UDP scans as the non-root user
# when the pod adds NET_RAW. One binary cannot serve both: the kernel refuses to exec a binary
# whose effective file capabilities exceed the bounding set (EPERM), and a restricted pod's
# bounding set is empty. Only cap_net_raw is set, not cap_net_admin, for the same reason: the pod
# adds NET_RAW alone, and nmap's SYN and UDP scans need nothing more (tests/test_dockerfile.py).
#
# Build: docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#          --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t goalkeeper:0.1.0 .

# The base by digest, so that a rebuild of the same commit starts from the same bytes (the tag
# moves with every Debian and Python update). The digest of python:3.11-slim-bookworm as Docker
# Hub served it; to move on to a newer one, take it from
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/goalkeeper
# Every dependency at the version and hash of requirements.lock (`make lock`), then the package
# alone: a rebuild installs exactly what CI tested.
COPY requirements.lock ./
RUN /opt/goalkeeper/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY goalkeeper ./goalkeeper
RUN /opt/goalkeeper/bin/pip install --no-cache-dir --no-deps ".[postgres]"

FROM ${PYTHON_IMAGE}
# Re-declared: an ARG from before the first FROM is not visible inside a stage.
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="goalkeeper" \
      org.opencontainers.image.description="Scans an OpenStack cloud's customer servers for dangerous open ports and tells their owners." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# Versions are pinned to the upstream release (Debian's security rebuilds still apply): nmap 7.93
# is the version whose XML and timeouts the scanner was measured against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "nmap=7.93*" \
        "tini=0.19*" \
        "libcap2-bin=1:2.66*" \
    && install -d -m 0755 /usr/lib/goalkeeper/nmap-privileged \
    && cp /usr/bin/nmap /usr/lib/goalkeeper/nmap-privileged/nmap \
    && setcap cap_net_raw+eip /usr/lib/goalkeeper/nmap-privileged/nmap \
    && apt-get purge -y --auto-remove libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 goalkeeper \
    && useradd --system --uid 10001 --gid goalkeeper --home-dir /var/lib/goalkeeper \
        --no-create-home --shell /usr/sbin/nologin goalkeeper \
    && install -d -o goalkeeper -g goalkeeper -m 0750 /var/lib/goalkeeper

COPY --from=build /opt/goalkeeper /opt/goalkeeper
# A default config for `docker run ... check-config` (exit 2 until scan.allowed_networks is set,
# as scan and run would); in Kubernetes a ConfigMap replaces the folder.
COPY config.yaml /etc/goalkeeper/config.yaml

# The relative default state URL (./goalkeeper-state.db) lands in the state folder.
WORKDIR /var/lib/goalkeeper
# MALLOC_ARENA_MAX: glibc gives every thread that allocates (the OpenStack read, nmap's XML
# parse, the SQLite driver) an arena of its own, which keeps freed memory: capped at 2, the
# tick's peak RSS at 16,384 hosts fell from 146 to 137 MiB (docs/performance.md).
ENV PATH=/opt/goalkeeper/bin:$PATH \
    MALLOC_ARENA_MAX=2 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GOALKEEPER_CONFIG=/etc/goalkeeper/config.yaml
USER 10001:10001
EXPOSE 8080
# tini is PID 1: it forwards SIGTERM and SIGHUP to the daemon (so `kill -HUP 1` reloads the
# config) and reaps nmap's children. It does not signal the process group: the daemon decides
# how its nmap runs end.
ENTRYPOINT ["/usr/bin/tini", "--", "goalkeeper"]
CMD ["run"]
