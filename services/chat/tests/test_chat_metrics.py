"""Chat's metrics move with real runs: started, finished by status, tokens, time to first
token, and the active-streams gauge the HPA example scales on."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .test_conversations import CONV
from .test_runs import fake_llm, remote_agent  # noqa: F401 - fixtures


def value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_a_streamed_run_shows_up_in_the_metrics(chat, remote_agent):  # noqa: F811
    headers, agent = remote_agent
    before = (await chat.get("/metrics")).text
    conversation = (
        await chat.post(CONV, json={"agent_id": agent["id"], "title": "t"}, headers=headers)
    ).json()
    response = await chat.post(
        f"{CONV}/{conversation['id']}/messages",
        headers=headers,
        json={"content": "hi", "stream": True},
    )
    assert response.status_code == 200
    after = (await chat.get("/metrics")).text

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("agentmesh_chat_runs_started_total") == 1
    assert grew("agentmesh_chat_runs_finished_total", status="completed") == 1
    model = {"gen_ai_request_model": "fake-model"}
    assert grew("gen_ai_client_token_usage_count", gen_ai_token_type="output", **model) == 1
    assert grew("gen_ai_client_token_usage_sum", gen_ai_token_type="output", **model) > 0
    assert grew("agentmesh_chat_time_to_first_token_seconds_count", **model) == 1
    assert grew("gen_ai_client_operation_duration_seconds_count", **model) == 1
    # The stream has ended, so the gauge is back where it was.
    assert value(after, "agentmesh_chat_active_streams") == value(
        before, "agentmesh_chat_active_streams"
    )
    assert "agentmesh_chat_active_streams" in after
