"""Fuzz the gateway's merged OpenAPI with schemathesis, as an authenticated user.

The platform (identity, agents, chat, and the gateway in front) is served over real HTTP
in this process, on real Postgres and NATS; schemathesis runs as a subprocess against the
gateway, with a user's access token, and must find no 5xx and no response that breaks
the documented schema. See ``tests/fuzz/README.md`` for the command and what it skips.

Bounded for CI (a few minutes): ``FUZZ_MAX_EXAMPLES`` cases per operation (default 10)
and a fixed ``FUZZ_SEED``, so a run is reproducible.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from agentmesh.agents.app import create_app as create_agents
from agentmesh.agents.settings import AgentsSettings
from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.settings import ChatSettings
from agentmesh.gateway.app import create_app as create_gateway
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    serve_app,
)

PASSWORD = "correct horse battery staple"
#: Far above what the fuzzer sends: it checks behaviour, not the gateway's rate limits.
UNLIMITED = {"rate_limit": {"rate": 10_000, "burst": 20_000}}
GROUPS = ("auth", "identity", "agents", "knowledge", "chat", "chat_runs")

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))
SEED = int(os.environ.get("FUZZ_SEED", "20240607"))
#: Hard bound on the schemathesis run, whatever the machine.
RUN_TIMEOUT = float(os.environ.get("FUZZ_TIMEOUT", "600"))

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
#: ``not_a_server_bug`` is ``not_a_server_error`` but for a user's own (made-up) model
#: provider or MCP server failing: see ``schemathesis_hooks.py``.
CHECKS = ",".join(
    (
        "not_a_server_bug",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    )
)
#: Operations that would end the fuzzing user's session or account, so every later case
#: would only test the 401 path: erasing the account, and logging out (one or every
#: session: the access token is tied to its session).
EXCLUDED = (
    ("DELETE", "/api/v1/users/me"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/logout-all"),
)


def schemathesis_command(openapi_url: str, access_token: str, config: Path) -> list[str]:
    """The CLI invocation (also what ``tests/fuzz/README.md`` documents)."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        openapi_url,
        "--header",
        f"Authorization: Bearer {access_token}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # Only the user's token: a made-up X-API-Key beside it would be refused (401)
        # before the request reaches any service.
        "--generation-with-security-parameters",
        "false",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--workers",
        "1",
        "--no-color",
        "--output-truncate",
        "false",
        "--suppress-health-check",
        "all",
    ]
    for method, path in EXCLUDED:
        command += ["--exclude-name", f"{method} {path}"]
    return command


@pytest.fixture
async def gateway_url(common_settings):
    """The gateway's real HTTP address, in front of identity, agents and chat."""
    async with AsyncExitStack() as stack:
        identity_url = await stack.enter_async_context(
            serve_app(
                create_identity(
                    IdentitySettings(
                        common=common_settings,
                        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                        internal_token=TEST_INTERNAL_TOKEN,
                    ),
                )
            )
        )
        common = common_settings.model_copy(
            update={"jwks_url": f"{identity_url}/.well-known/jwks.json"}
        )
        agents_url = await stack.enter_async_context(
            serve_app(
                create_agents(
                    AgentsSettings(
                        common=common,
                        provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                        internal_token=TEST_INTERNAL_TOKEN,
                        allow_private_network=True,
                    ),
                )
            )
        )
        chat_url = await stack.enter_async_context(
            serve_app(
                create_chat(
                    ChatSettings(
                        common=common,
                        internal_token=TEST_INTERNAL_TOKEN,
                        allow_private_network=True,
                    ),
                )
            )
        )
        url = await stack.enter_async_context(
            serve_app(
                create_gateway(
                    GatewaySettings(
                        common=common_settings,
                        identity_url=identity_url,
                        agents_url=agents_url,
                        chat_url=chat_url,
                        internal_token=TEST_INTERNAL_TOKEN,
                        groups={name: UNLIMITED for name in GROUPS},
                        auth_failure_limit=UNLIMITED["rate_limit"],
                        limits_scope=uuid.uuid4().hex,
                    ),
                )
            )
        )
        yield url


#: Unreachable on purpose (the discard port): where the user's provider and MCP server live.
NOWHERE = "http://127.0.0.1:9"


async def create(client: httpx.AsyncClient, path: str, body: dict, headers: dict) -> dict:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


async def sign_up(client: httpx.AsyncClient) -> tuple[str, dict[str, list[str | int]]]:
    """Register and log in a user who owns one of everything; returns the access token
    and the ids of what it owns, per path parameter."""
    email = f"fuzz-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD, "name": "Fuzz User"}
    user = await create(client, "/api/v1/auth/register", body, {})
    token = (await create(client, "/api/v1/auth/login", body, {}))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    keeper = {"name": "Keeper", "instructions": "You keep things.", "model": "offline"}
    agent = await create(client, "/api/v1/agents", keeper, headers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:  # until chat has learned the agent from its events
        started = await client.post(
            "/api/v1/conversations", json={"agent_id": agent["id"]}, headers=headers
        )
        if started.status_code == 201 or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert started.status_code == 201, started.text
    conversation = started.json()
    answer = await create(
        client,
        f"/api/v1/conversations/{conversation['id']}/messages",
        {"content": "Remember the milk."},
        headers,
    )
    kb = await create(client, "/api/v1/knowledge-bases", {"name": "Notes"}, headers)
    documents = f"/api/v1/knowledge-bases/{kb['id']}/documents"
    document = await create(client, documents, {"text": "The milk is in the fridge."}, headers)
    while document["status"] in ("pending", "indexing") and loop.time() < deadline + 60:
        await asyncio.sleep(0.2)  # indexed before the fuzzing starts: it loads the model
        document = (await client.get(f"{documents}/{document['id']}", headers=headers)).json()
    assert document["status"] == "ready", document
    provider = await create(
        client,
        "/api/v1/providers",
        {"kind": "openai", "name": "Nowhere", "base_url": f"{NOWHERE}/v1"},
        headers,
    )
    server = await create(
        client, "/api/v1/mcp-servers", {"name": "Nowhere", "url": f"{NOWHERE}/mcp"}, headers
    )
    key = await create(client, "/api/v1/api-keys", {"name": "fuzz"}, headers)
    ids: dict[str, list[str | int]] = {
        "user_id": [user["id"]],
        "agent_id": [agent["id"]],
        "version": [1],
        "conversation_id": [conversation["id"]],
        "message_id": [answer["id"], answer["parent_id"]],
        "run_id": [answer["run_id"]],
        "kb_id": [kb["id"]],
        "document_id": [document["id"]],
        "provider_id": [provider["id"]],
        "server_id": [server["id"]],
        "api_key_id": [key["id"]],
    }
    return token, ids


def schemathesis_config(ids: dict[str, list[str | int]]) -> str:
    """A schemathesis.toml: path parameters take the user's ids most of the time (else
    generated ones), so operations on one resource reach more than its 404."""
    lines = []
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for name in ids:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.8 }}')
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(900)
async def test_gateway_openapi_fuzz(gateway_url, tmp_path):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        token, ids = await sign_up(client)
        for _ in range(20):  # every service's part, not a document missing a slow one
            document = (await client.get("/openapi.json")).json()
            if "Not available" not in document["info"]["description"]:
                break
            await asyncio.sleep(0.5)
        assert "Not available" not in document["info"]["description"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(ids))

    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *schemathesis_command(f"{gateway_url}/openapi.json", token, config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        cwd=tmp_path,  # its .schemathesis/ cache (replayed crashes) stays out of the repo
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        pytest.fail(f"schemathesis ran over {RUN_TIMEOUT}s:\n{output.decode()}")
    print(output.decode(errors="replace"))
    print(f"schemathesis took {time.monotonic() - started:.0f}s")
    assert process.returncode == 0, "schemathesis found failures: see its output above"


#: A value of the wrong JSON type for a property of each type.
WRONG_TYPE = {
    "string": 12345,
    "integer": "many",
    "number": "many",
    "boolean": "maybe",
    "array": "not-a-list",
    "object": ["not", "an", "object"],
}


def _resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def _types(document: dict, schema: dict) -> set[str]:
    """The JSON types a property's schema admits (``null`` included when it is nullable)."""
    schema = _resolve(document, schema)
    if "anyOf" in schema or "oneOf" in schema:
        return set().union(*(_types(document, s) for s in schema.get("anyOf", schema.get("oneOf"))))
    kind = schema.get("type")
    if kind is None:
        return {"any"}
    return {kind} if isinstance(kind, str) else set(kind)


def update_operations(document: dict, ids: dict[str, list[str | int]]):
    """Every PATCH and PUT with a JSON body whose path parameters the user's ids fill:
    ``(method, path, {property: types})``."""
    for template, item in document["paths"].items():
        for method in ("patch", "put"):
            operation = item.get(method)
            body = (operation or {}).get("requestBody", {}).get("content", {})
            if "application/json" not in body:
                continue
            names = [p.strip("{}") for p in template.split("/") if p.startswith("{")]
            if not all(name in ids for name in names):
                continue
            path = template
            for name in names:
                path = path.replace("{" + name + "}", str(ids[name][0]))
            schema = _resolve(document, body["application/json"]["schema"])
            properties = {
                name: _types(document, prop) for name, prop in schema.get("properties", {}).items()
            }
            yield method.upper(), path, properties


@pytest.mark.timeout(600)
async def test_nulls_and_wrong_types_on_updates_are_client_errors(gateway_url):
    """Deterministic sweep of the class of bug fuzzing found (a null ``name`` on PATCH
    answered 500): every property of every update body, sent as ``null`` and as a value of
    the wrong type, to the user's own resource. Never a 5xx; a null where the schema does
    not allow one is a 422 naming the field."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        token, ids = await sign_up(client)
        headers = {"Authorization": f"Bearer {token}"}
        document = (await client.get("/openapi.json")).json()
        operations = list(update_operations(document, ids))
        assert any(path.startswith("/api/v1/knowledge-bases/") for _, path, _ in operations)
        failures, tried = [], 0
        for method, path, properties in operations:
            for name, types in properties.items():
                wrong = next((WRONG_TYPE[t] for t in sorted(types) if t in WRONG_TYPE), None)
                for value in (None, wrong):
                    if value is None and wrong is None and "any" in types:
                        continue
                    tried += 1
                    answer = await client.request(method, path, json={name: value}, headers=headers)
                    admitted = "null" in types if value is None else "any" in types
                    # (401 and 403: refused before the body counts, as a platform admin's
                    # operation is for this user.)
                    refused = answer.status_code in (401, 403, 422)
                    if answer.status_code >= 500 or (not admitted and not refused):
                        failures.append(
                            f"{method} {path} {{{name!r}: {value!r}}}: "
                            f"{answer.status_code} {answer.text[:200]}"
                        )
                    elif answer.status_code == 422:
                        assert name in answer.text, answer.text
    print(f"{tried} updates tried on {len(operations)} operations")
    assert not failures, "\n".join(failures)
