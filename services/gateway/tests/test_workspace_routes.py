"""The gateway routes workspace and invitation paths to identity, behind authentication."""

import pytest

from agentmesh.gateway.routing import resolve


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/workspaces"),
        ("POST", "/api/v1/workspaces/0192/invitations"),
        ("DELETE", "/api/v1/workspaces/0192/members/0193"),
        ("GET", "/api/v1/invitations"),
        ("POST", "/api/v1/invitations/accept"),
        ("POST", "/api/v1/auth/switch"),
    ],
)
def test_workspace_paths_go_to_identity_and_need_a_caller(method, path):
    route = resolve(method, path)
    assert route is not None and route.upstream == "identity" and not route.public


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize(
    "path", ["/api/v1/workspaces/0192/budget", "/api/v1/workspaces/0192/members/0193/budget"]
)
def test_workspace_and_member_budgets_go_to_chat(method, path):
    route = resolve(method, path)
    assert route is not None and (route.upstream, route.group, route.public) == (
        "chat",
        "chat",
        False,
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workspaces/0192/budgets",
        "/api/v1/workspaces/0192/budget/x",
        "/api/v1/workspaces/0192/members/0193",
        "/api/v1/workspaces/0192/members/0193/budget/x",
        "/api/v1/workspaces/0192/invitations/budget",
    ],
)
def test_other_workspace_paths_stay_with_identity(path):
    route = resolve("GET", path)
    assert route is not None and route.upstream == "identity"
