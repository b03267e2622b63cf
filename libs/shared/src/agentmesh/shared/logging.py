"""JSON logs carrying ``service``, ``request_id``, ``trace_id`` and ``span_id``."""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from agentmesh.shared.context import current_request_id

_configured_service: str | None = None


class ContextFilter(logging.Filter):
    """Adds the service name, request id and current trace ids to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id()
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = None
            record.span_id = None
        return True


def configure_logging(service: str, *, level: str = "INFO", json: bool = True) -> None:
    """Route every logger through one stdout handler (JSON unless ``json=False``)."""
    global _configured_service
    handler = logging.StreamHandler(sys.stdout)
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s")
        )
    handler.addFilter(ContextFilter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_agentmesh", False):
            root.removeHandler(existing)
    handler._agentmesh = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured_service = service
