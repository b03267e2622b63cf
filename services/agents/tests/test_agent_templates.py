"""Instructions templates and few-shot examples, as the agents service checks and keeps them:
anything but a variable is a 422 naming the field and the expression, on create and on
PATCH; examples are kept (at most 20) and reach chat in the agent's events."""

from __future__ import annotations

import uuid

import pytest

from .test_agents import AGENTS, KEEPER, problem

GOOD = (
    "You help {{ user.name }} <{{user.email}}> of {{workspace.name}} in "
    "'{{conversation.title}}' on {{date}} ({{ datetime }}), at {{station}}.{# note #}"
)
BAD = [
    ("{{ station.name }}", "attribute access"),
    ("{{ user.name.upper }}", "attribute access"),
    ("{{ user['name'] }}", "item access"),
    ("{{ date() }}", "a call"),
    ("{{ user.name | upper }}", "a filter"),
    ("{% for x in items %}{{ x }}{% endfor %}", "a loop"),
    ("{% if station %}at {{ station }}{% endif %}", "a condition"),
    ("{{ user.nmae }}", "user has no 'nmae'"),
    ("{{ workspace.title }}", "workspace has no 'title'"),
    ("{{ conversation.name }}", "conversation has no 'name'"),
    ("{{ user }}", "needs one of its attributes"),
    ("{{ 'hi' }}", "a literal"),
    ("{{ station", "not a valid template"),
]


@pytest.fixture
def user(token_issuer):
    return lambda: token_issuer.headers(uuid.uuid4())


def template_error(response) -> dict:
    assert response.status_code == 422 and problem(response) == "validation-error", response.text
    [error] = [e for e in response.json()["errors"] if e["loc"] == ["body", "instructions"]]
    assert error["type"] == "invalid_template"
    assert "instructions" in response.json()["detail"]
    return error


async def test_variables_are_accepted_and_kept(agents, user, outbox_events):
    created = await agents.post(AGENTS, json={**KEEPER, "instructions": GOOD}, headers=user())
    assert created.status_code == 201, created.text
    assert created.json()["instructions"] == GOOD
    [event] = await outbox_events("agents.agent.created", created.json()["id"])
    assert event["data"]["config"]["instructions"] == GOOD


@pytest.mark.parametrize(("instructions", "reason"), BAD)
async def test_anything_but_a_variable_is_a_422(agents, user, instructions, reason):
    response = await agents.post(
        AGENTS, json={**KEEPER, "instructions": f"Hello.\n{instructions} Bye."}, headers=user()
    )
    error = template_error(response)
    assert reason in error["msg"]
    if reason.startswith("not a valid"):  # the line at fault
        assert error["msg"].startswith(f"{instructions} Bye.: ")
    else:  # the very block at fault
        end = "}}" if instructions.startswith("{{") else "%}"
        assert error["msg"].startswith(instructions.split(end)[0] + end + ": ")


async def test_patch_checks_the_template_too(agents, user):
    headers = user()
    agent = (await agents.post(AGENTS, json=KEEPER, headers=headers)).json()
    url = f"{AGENTS}/{agent['id']}"
    error = template_error(
        await agents.patch(
            url,
            json={"instructions": "Hi {{ user.name }} {# ok #} on {{date}}: {{ user.nmae }}"},
            headers=headers,
        )
    )
    assert error["msg"].startswith("{{ user.nmae }}: ")
    unchanged = (await agents.get(url, headers=headers)).json()
    assert unchanged["version"] == 1 and unchanged["instructions"] == KEEPER["instructions"]
    fixed = await agents.patch(url, json={"instructions": "Hi {{ user.name }}"}, headers=headers)
    assert fixed.status_code == 200 and fixed.json()["version"] == 2


async def test_examples_are_kept_in_order_and_sent_to_chat(agents, user, outbox_events):
    headers = user()
    shots = [{"user": f"Q{i}", "assistant": f"A{i}"} for i in range(20)]
    created = await agents.post(AGENTS, json={**KEEPER, "examples": shots}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["examples"] == shots
    [event] = await outbox_events("agents.agent.created", created.json()["id"])
    assert event["data"]["config"]["examples"] == shots
    url = f"{AGENTS}/{created.json()['id']}"
    cleared = await agents.patch(url, json={"examples": []}, headers=headers)
    assert cleared.status_code == 200 and cleared.json()["examples"] == []
    plain = (await agents.post(AGENTS, json=KEEPER, headers=headers)).json()
    assert plain["examples"] == []


@pytest.mark.parametrize(
    ("examples", "loc"),
    [
        ([{"user": "Q", "assistant": "A"}] * 21, ["body", "examples"]),
        ([{"user": "Q"}], ["body", "examples", "0", "assistant"]),
        ([{"user": "", "assistant": "A"}], ["body", "examples", "0", "user"]),
        ([{"user": "Q", "assistant": "A", "system": "S"}], ["body", "examples", "0", "system"]),
    ],
)
async def test_bad_examples_are_a_422(agents, user, examples, loc):
    response = await agents.post(AGENTS, json={**KEEPER, "examples": examples}, headers=user())
    assert response.status_code == 422 and problem(response) == "validation-error"
    assert loc in [e["loc"] for e in response.json()["errors"]], response.json()["errors"]
