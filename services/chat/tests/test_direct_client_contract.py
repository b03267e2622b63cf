"""The contract ``DirectCompletions`` relies on: the openai SDK's private ``_post`` and
``make_request_options``. ``openai`` is pinned in services/chat/pyproject.toml to the range
these tests passed on; when an upgrade changes the private API they fail, before a run
does. The wire body is also compared with the SDK's own ``create`` (streamed in
test_llm.py::test_requests_skip_the_sdk_transform_but_send_what_the_sdk_would, plain here).
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import httpx
import openai
import pytest
from openai._base_client import AsyncAPIClient, make_request_options
from openai.resources.chat.completions import AsyncCompletions
from packaging.requirements import Requirement

from agentmesh.chat.llm.direct_client import _OPTIONS, DirectCompletions
from agentmesh.shared import outbound
from agentmesh.shared.outbound import OutboundPolicy
from agentmesh.shared.testing.openai_server import FakeOpenAI

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_installed_openai_is_in_the_pinned_tested_range():
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [pin] = [Requirement(d) for d in dependencies if Requirement(d).name == "openai"]
    assert pin.specifier and any(spec.operator == "<" for spec in pin.specifier), pin
    assert pin.specifier.contains(openai.__version__), (openai.__version__, str(pin))


def test_the_private_post_keeps_the_signature_direct_completions_calls():
    client = openai.AsyncOpenAI(api_key="sk-x", base_url="http://127.0.0.1:9/v1")
    post = client.chat.completions._post
    assert post.__self__ is client and post.__func__ is AsyncAPIClient.post
    parameters = inspect.signature(AsyncAPIClient.post).parameters
    assert list(parameters)[:2] == ["self", "path"]
    for name in ("cast_to", "body", "options", "stream", "stream_cls"):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    options = inspect.signature(make_request_options).parameters
    for name in (*_OPTIONS, "security"):
        assert options[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_every_request_option_of_create_is_kept_out_of_the_body():
    """``create``'s keywords that are request options, not body fields: a new one would
    otherwise be posted to the provider as a body field."""
    create = inspect.signature(AsyncCompletions.create).parameters
    options = {name for name in create if name.startswith("extra_") or name == "timeout"}
    assert options == set(_OPTIONS)


@pytest.fixture
async def fake():
    async with FakeOpenAI(api_key="sk-test-key-0123456789", reply="forty two") as server:
        yield server


async def test_a_plain_call_puts_on_the_wire_what_the_sdks_create_would(fake):
    policy = OutboundPolicy(allowed_private=(httpx.URL(fake.base_url).netloc.decode(),))
    async with outbound.async_client2(policy) as http:
        client = openai.AsyncOpenAI(
            api_key=fake.api_key, base_url=fake.base_url, http_client=http, max_retries=0
        )
        params = {
            "model": "fake-model",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "6*7?"}]},
            ],
            "temperature": 0.0,
            "max_tokens": 16,
            "stream": False,
            "n": openai.NOT_GIVEN,
        }
        ours = await DirectCompletions(client.chat.completions).create(**params, timeout=5)
        theirs = await client.chat.completions.create(**params, timeout=5)
    assert type(ours) is type(theirs) and ours.choices[0].message.content == "forty two"
    direct, sdk = fake.requests[-2:]
    assert direct.body == sdk.body and direct.path == sdk.path
    assert direct.authorized and sdk.authorized
