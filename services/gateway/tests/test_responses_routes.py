"""The Responses and Conversations APIs go to chat; creating a response is a model run."""

import pytest

from agentmesh.gateway.routing import resolve


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("POST", "/v1/responses", "chat_runs"),
        ("GET", "/v1/responses/resp_1", "chat"),
        ("GET", "/v1/responses/resp_1/input_items", "chat"),
        ("DELETE", "/v1/responses/resp_1", "chat"),
        ("POST", "/v1/conversations", "chat"),
        ("POST", "/v1/conversations/conv_1/items", "chat"),
    ],
)
def test_responses_paths_go_to_chat(method, path, group):
    route = resolve(method, path)
    assert route is not None and route.upstream == "chat" and not route.public
    assert route.group == group
