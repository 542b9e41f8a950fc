# syntax=docker/dockerfile:1
#
# One image for every process of payments-cqs (the process table, shared/processes.py).
# The process is chosen by the command:
#   docker run IMAGE command-api | command-worker | relay | intake |
#                    query-api | projector | query-worker |
#                    webhooks                                     (long-running)
#   docker run IMAGE migrate | replay | reconcile | topics        (one-shot)
# Build:  docker build -t payments-cqs:local .
#
# Stage 1 builds wheels (the project and all its dependencies) and installs them into a
# virtual environment; stage 2 copies only that environment onto a clean slim image.
# Development tooling stays out: the `local` extra (embedded dev servers: Temporal CLI,
# Tansu, SecantusDB, ...) is never installed, and .dockerignore leaves out devstack/
# (`payments stack|up|demo`): a container talks to real servers configured through
# PAYMENTS_* variables.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A compiler only here, for any dependency without a wheel for this platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore lets in only pyproject.toml, README.md, shared/, services/ and the health check.
COPY . .
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip wheel \
 && /opt/venv/bin/pip wheel --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-index --find-links /wheels payments-cqs \
 && /opt/venv/bin/payments --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="payments-cqs" \
      org.opencontainers.image.description="Payments CQS: command API/worker, outbox relay, query API/projector/worker"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PAYMENTS_HOST=0.0.0.0 \
    PAYMENTS_LOG_JSON=true \
    PAYMENTS_DATA_DIR=/var/lib/payments
RUN groupadd --system --gid 10001 payments \
 && useradd --system --uid 10001 --gid payments --home-dir /var/lib/payments \
            --no-create-home --shell /usr/sbin/nologin payments \
 && install -d -o payments -g payments -m 0750 /var/lib/payments
COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/lib/payments/healthcheck.py
WORKDIR /var/lib/payments
USER 10001:10001
# The default port of each long-running process: its API, or a worker's ops endpoint
# (shared/processes.py; tests/deploy/test_compose.py keeps the two equal).
EXPOSE 8001 8002 9101 9102 9103 9104 9105 9106
# GET /healthz on the port of the process this container runs (see the script).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/usr/local/lib/payments/healthcheck.py"]
ENTRYPOINT ["payments"]
CMD ["--help"]
