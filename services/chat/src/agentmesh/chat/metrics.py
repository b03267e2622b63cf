"""Chat's Prometheus metrics (served with the shared ones at ``GET /metrics``).

``agentmesh_chat_active_streams`` is the per-pod metric the chat HPA example scales on.
Token usage and operation duration follow OpenTelemetry's GenAI conventions
(``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from agentmesh.shared.metrics import BUCKETS

RUNS_STARTED = Counter("agentmesh_chat_runs_started", "Runs started.")
RUNS_FINISHED = Counter(
    "agentmesh_chat_runs_finished", "Runs finished, by final status.", ["status"]
)
ACTIVE_STREAMS = Gauge(
    "agentmesh_chat_active_streams", "Server-sent event streams open on this replica."
)
TIME_TO_FIRST_TOKEN = Histogram(
    "agentmesh_chat_time_to_first_token_seconds",
    "From the model call to its first token.",
    ["gen_ai_provider_name", "gen_ai_request_model"],
    buckets=BUCKETS,
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per model call, by type (input, output), provider and model.",
    ["gen_ai_token_type", "gen_ai_provider_name", "gen_ai_request_model"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576),
)
OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Duration of a run's model work, by provider and model.",
    ["gen_ai_provider_name", "gen_ai_request_model"],
    buckets=BUCKETS,
)


def record_finish(
    *,
    status: str,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    latency_ms: float | None,
    ttft_ms: float | None,
) -> None:
    """Count a finished run and its usage."""
    RUNS_FINISHED.labels(status).inc()
    TOKEN_USAGE.labels("input", provider, model).observe(input_tokens)
    TOKEN_USAGE.labels("output", provider, model).observe(output_tokens)
    if latency_ms is not None:
        OPERATION_DURATION.labels(provider, model).observe(latency_ms / 1000)
    if ttft_ms is not None:
        TIME_TO_FIRST_TOKEN.labels(provider, model).observe(ttft_ms / 1000)
