"""Which upstream and route group serve a path, and which routes are public."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: (path prefix, upstream, group), most specific first.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("/api/v1/auth/", "identity", "auth"),
    ("/api/v1/users", "identity", "identity"),
    ("/api/v1/api-keys", "identity", "identity"),
    ("/api/v1/workspaces", "identity", "identity"),
    ("/api/v1/invitations", "identity", "identity"),
    ("/.well-known/jwks.json", "identity", "auth"),
    ("/api/v1/agents", "agents", "agents"),
    ("/api/v1/providers", "agents", "agents"),
    ("/api/v1/tools", "agents", "agents"),
    ("/api/v1/mcp-servers", "agents", "agents"),
    ("/api/v1/knowledge-bases", "agents", "knowledge"),
    ("/api/v1/conversations", "chat", "chat"),
    ("/api/v1/runs", "chat", "chat"),
    ("/api/v1/usage", "chat", "chat"),
    ("/api/v1/budgets", "chat", "chat"),
    ("/v1/", "chat", "chat"),
)

#: The first segments of every proxied path (``/api/``, ``/.well-known/``, ``/v1/``): the
#: gateway serves nothing of its own under them.
PREFIXES = tuple(sorted({"/" + prefix.split("/")[1] + "/" for prefix, _, _ in ROUTES}))

#: The budgets of a workspace and of its members: chat's (chat enforces them), though the
#: rest of ``/api/v1/workspaces`` is identity's.
_CHAT_BUDGETS = re.compile(r"^/api/v1/workspaces/[^/]+(/members/[^/]+)?/budget$")

#: Routes anyone may call (limited per IP instead of per principal).
PUBLIC = {
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/.well-known/jwks.json"),
    # OpenID Connect sign-in: a browser arrives at these without a token.
    ("GET", "/api/v1/auth/oidc/providers"),
    ("GET", "/api/v1/auth/oidc/{name}/authorize"),
    ("GET", "/api/v1/auth/oidc/{name}/callback"),
    ("POST", "/api/v1/auth/oidc/token"),
}
#: The templated public routes as patterns (a ``{param}`` is one path segment).
_PUBLIC_PATTERNS = tuple(
    (method, re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"))
    for method, path in PUBLIC
    if "{" in path
)


def is_public(method: str, path: str) -> bool:
    """Whether ``method path`` may be called without a token."""
    if (method, path) in PUBLIC:
        return True
    return any(m == method and pattern.match(path) for m, pattern in _PUBLIC_PATTERNS)


#: Routes that run the model: a new message, a regenerated answer, the OpenAI API...
_CHAT_RUN = re.compile(
    r"^(/api/v1/conversations/[^/]+/messages(/[^/]+/regenerate)?|/v1/chat/completions"
    r"|/v1/responses)$"
)
#: ... and an edited question (PATCH of a message), which answers it again.
_CHAT_EDIT = re.compile(r"^/api/v1/conversations/[^/]+/messages/[^/]+$")


def is_run(method: str, path: str) -> bool:
    return (method == "POST" and bool(_CHAT_RUN.match(path))) or (
        method == "PATCH" and bool(_CHAT_EDIT.match(path))
    )


@dataclass(frozen=True)
class Route:
    upstream: str
    group: str
    public: bool


_SUSPICIOUS = ("..", "//", "\\", "%2e", "%2f", "%5c", "\x00")


def resolve(method: str, path: str) -> Route | None:
    """The route serving ``method path`` (decoded once), or None (the gateway's own 404).

    Dot segments, doubled slashes, backslashes and encoded dots or slashes (double
    encoding) are refused outright rather than normalized: a path must mean the same to
    the gateway and to the service behind it."""
    lowered = path.lower()
    if any(token in lowered for token in _SUSPICIOUS):
        return None
    if _CHAT_BUDGETS.match(path):
        return Route("chat", "chat", False)
    for prefix, upstream, group in ROUTES:
        exact = prefix.rstrip("/")
        if path == exact or path.startswith(exact + "/"):
            if is_run(method, path):
                group = "chat_runs"
            return Route(upstream, group, is_public(method, path))
    return None
