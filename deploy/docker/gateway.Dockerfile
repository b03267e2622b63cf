# syntax=docker/dockerfile:1
# The gateway image. Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t agentmesh/gateway .
# Every service's Dockerfile follows this one pattern (deploy/validate.py checks them).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: uv installs exactly the lock's versions into /app/.venv -------------------
FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer changes only with the lock. uv needs every workspace
# member's pyproject.toml to read the lock, but installs only this service's packages.
COPY pyproject.toml uv.lock ./
COPY libs/shared/pyproject.toml libs/shared/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/identity/pyproject.toml services/identity/
COPY services/agents/pyproject.toml services/agents/
COPY services/chat/pyproject.toml services/chat/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package agentmesh-gateway
# Then the code: the shared library and the service, built and installed as wheels
# (--no-editable), so the runtime stage needs the virtualenv and nothing else.
COPY libs/shared libs/shared
COPY services/gateway services/gateway
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package agentmesh-gateway

# ---- runtime: slim Python, the virtualenv, an unprivileged user ----------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 agentmesh \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin agentmesh
COPY --from=build /app/.venv /app/.venv
# HOME=/tmp: the only writable place when the root filesystem is read-only (Kubernetes
# and compose mount a tmpfs there); libraries that cache files put them there.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8000
# No curl in a slim image: Python asks /health/live itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
# The gateway has no database and no migrations.
# The edge: a client's X-Forwarded-For is never taken as its address
# (GATEWAY_TRUSTED_PROXIES names a load balancer in front, if any).
CMD ["uvicorn", "agentmesh.gateway.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--no-proxy-headers"]
