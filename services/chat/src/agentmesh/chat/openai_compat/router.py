"""``/v1``: the OpenAI-compatible API. The caller's agents are the models; a completion
runs one statelessly with the messages given. The official ``openai`` client and
LangChain's ``ChatOpenAI`` work against it unmodified (``base_url=<gateway>/v1``, an
AgentMesh API key as ``api_key``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentmesh.chat.deps import AppState
from agentmesh.chat.openai_compat import passthrough, repository, service
from agentmesh.chat.openai_compat.completions import completion, completion_chunks, now
from agentmesh.chat.openai_compat.errors import OpenAIRoute
from agentmesh.chat.openai_compat.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    Model,
    ModelList,
)
from agentmesh.chat.runs.sse import event_stream
from agentmesh.shared.access import Access, access_to
from agentmesh.shared.db import Session
from agentmesh.shared.errors import NotFound
from agentmesh.shared.openapi import sse_content

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
#: The catch-all, apart: the app includes ``router`` first (the model path is then matched
#: before every other route, not after all of them) and this one last.
unknown_router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
#: Any member of the workspace (viewer and up); API keys need the ``chat`` scope.
Chatter = Annotated[Access, access_to("viewer", "chat")]
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "Malformed request (OpenAI error shape)"),
        (401, "Missing or invalid API key or token, or no longer a member"),
        (402, "Over the monthly budget"),
        (403, "An API key without the chat scope"),
        (404, "No such model (agent) in your workspace"),
        ("default", "Any other error, in OpenAI's shape (429, 5xx)"),
    )
}


@router.get("/models", response_model=ModelList, responses=ERRORS)
async def list_models(caller: Chatter, session: Session) -> ModelList:
    """The agents of your token's workspace as models, each listed twice: by its id and
    by a slug of its name (``"Keeper"`` -> ``keeper``; agents whose names give the same
    slug get the end of their id appended, as in ``keeper-3f9a0c12``). ``model`` in a
    completion takes either."""
    agents = [snapshot for snapshot, _ in await repository.caller_agents(session, caller)]
    slugs = service.model_slugs(agents)
    data: list[Model] = []
    for snapshot in agents:
        created = int(snapshot.updated_at.timestamp())
        data.append(Model(id=str(snapshot.agent_id), created=created))
        data.append(Model(id=slugs[snapshot.agent_id], created=created))
    return ModelList(data=data)


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        **ERRORS,
        200: {
            "description": "A chat.completion; with stream: true, "
            "text/event-stream of chat.completion.chunk objects",
            "content": sse_content(),
        },
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest, caller: Chatter, session: Session, state: AppState
) -> Any:
    """Run an agent statelessly on the messages given, as OpenAI's Chat Completions does:
    nothing is kept but the run and its usage.

    - ``messages``: system (and developer) messages are added after the agent's
      instructions; user, assistant (with ``tool_calls``) and tool messages follow.
    - ``temperature``: any value in 0..2 replaces the agent's.
    - ``max_tokens`` / ``max_completion_tokens``: capped at the agent's
      ``max_output_tokens`` when it sets one.
    - ``tools``: the model may call them; the calls come back in ``tool_calls``
      (``finish_reason: tool_calls``) for you to run. Without ``tools``, the agent's own
      tools run on the server. ``tool_choice`` (``none``, ``auto``, ``required`` or a
      named function) goes to the model with ``tools``.
    - ``response_format``: ``{"type": "json_object"}`` or ``{"type": "json_schema",
      "json_schema": {name, schema, strict?}}``: the answer is a JSON document. It reaches
      the provider in its own form (OpenAI, Azure OpenAI, Mistral as is; Anthropic as a
      tool it must call; Ollama as ``format``); the offline model answers a minimal
      document that validates against the schema.
    - ``stream``: ``chat.completion.chunk`` events ending with ``data: [DONE]``; with
      ``stream_options.include_usage``, a last chunk with empty ``choices`` and the usage.

    Budgets apply as for conversations (402 when this month's is spent). Errors use
    OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    plan = await service.start_completion(state, session, caller, body)
    # The common case streams the provider's chunks as they are; any other, LangChain's loop.
    lean = passthrough.applies(plan)
    channel = passthrough.start(state.executor, plan) if lean else state.executor.start(plan)
    if plan.recorded is not None:
        # The model request goes out before the run's row and the response's start.
        await plan.recorded.after_request(channel.task)
        # The model call is on: end the read-only transaction, so its connection is not
        # held for the whole run.
        await session.commit()
    created, headers = now(), {"X-Run-Id": str(plan.run_id)}
    if body.stream:
        chunks = completion_chunks(
            state.hub, channel, plan, body.model, created, include_usage=body.include_usage
        )
        return event_stream(chunks, state.settings.heartbeat_seconds, headers)  # type: ignore[arg-type]
    assert channel.task is not None
    outcome = await asyncio.shield(channel.task)  # a dropped client doesn't stop the run
    result = completion(plan, outcome, body.model, created)
    return JSONResponse(result.model_dump(mode="json"), headers=headers)


@unknown_router.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def unknown(path: str, request: Request) -> None:
    """Anything else under /v1 answers 404 in OpenAI's shape too."""
    raise NotFound(f"Invalid URL ({request.method} /v1/{path})", type="unknown-url")
