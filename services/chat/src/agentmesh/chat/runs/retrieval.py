"""A run's use of the agent's knowledge bases, and the citations of what the model was given.

The agent's ``knowledge`` says how (``{mode, top_k, min_score}``):

- ``tool`` (the default): the model calls ``knowledge_search`` when it wants; the passages
  each call returns are cited.
- ``always``: the latest user message is searched before the model is called, and the
  passages found go into the system message, so a model without tool support still
  answers from them. ``knowledge_search`` is then not bound unless the agent lists it.

Either way, a passage scoring under ``min_score`` is left out (the score is the knowledge
search's own: by default hybrid, the reciprocal-rank fusion of the vector and keyword
rankings), and the answer carries ``citations``: ``[{document_id, chunk_id, filename,
position, score}]`` of the passages the model was given, each chunk once, in the order
the model first saw them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from agentmesh.chat.llm.tokens import message_text

if TYPE_CHECKING:
    from agentmesh.chat.runs.executor import RunPlan

#: Passages per search in ``always`` mode when the agent does not say.
DEFAULT_TOP_K = 5
#: The knowledge search RPC takes queries up to this many characters.
MAX_QUERY_CHARS = 2000
HEADING = (
    "Passages from the knowledge bases, found for the user's latest message. Answer from "
    "them when they are relevant, and name the file a fact comes from."
)
CITED = ("document_id", "chunk_id", "filename", "position", "score")

Search = Callable[[str, int], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class Knowledge:
    mode: str = "tool"
    top_k: int | None = None
    min_score: float | None = None

    @classmethod
    def of(cls, config: dict[str, Any]) -> Knowledge:
        """The agent's ``knowledge`` (missing on agents from before it: ``tool``)."""
        knowledge = config.get("knowledge") or {}
        return cls(
            mode=str(knowledge.get("mode") or "tool"),
            top_k=knowledge.get("top_k"),
            min_score=knowledge.get("min_score"),
        )

    def kept(self, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.min_score is None:
            return hits
        return [hit for hit in hits if float(hit.get("score") or 0) >= self.min_score]


def cite(citations: list[dict[str, Any]], hits: list[dict[str, Any]]) -> None:
    """Add the hits the model is given to ``citations`` (a chunk already there stays)."""
    seen = {citation["chunk_id"] for citation in citations}
    for hit in hits:
        if hit.get("chunk_id") not in seen:
            seen.add(hit.get("chunk_id"))
            citations.append({key: hit.get(key) for key in CITED})


def tool_search(search: Search, knowledge: Knowledge, citations: list[dict[str, Any]]) -> Search:
    """``knowledge_search``'s search: at most the agent's ``top_k``, those under
    ``min_score`` left out, and what it returns cited."""

    async def searched(query: str, top_k: int) -> list[dict[str, Any]]:
        hits = knowledge.kept(await search(query, min(top_k, knowledge.top_k or top_k)))
        cite(citations, hits)
        return hits

    return searched


def latest_question(history: list[BaseMessage]) -> str:
    for message in reversed(history):
        if isinstance(message, HumanMessage):
            return message_text(message).strip()[:MAX_QUERY_CHARS]
    return ""


def passages(hits: list[dict[str, Any]]) -> str:
    blocks = [
        f"[{number}] {hit.get('filename') or 'unknown file'}\n{str(hit.get('content', '')).strip()}"
        for number, hit in enumerate(hits, start=1)
    ]
    return HEADING + "\n\n" + "\n\n".join(blocks)


async def ground(
    search: Search | None,
    plan: RunPlan,
    messages: list[BaseMessage],
    citations: list[dict[str, Any]],
) -> list[BaseMessage]:
    """``messages`` with the passages found for the latest user message in the system
    message, in ``always`` mode (otherwise, or with nothing found, as they are).

    Raises what the search raises (the agents service unreachable, a knowledge base
    gone): the run fails before the model is called, rather than answer without them."""
    knowledge = Knowledge.of(plan.config)
    question = latest_question(plan.history)
    if knowledge.mode != "always" or search is None or not question:
        return messages
    hits = knowledge.kept(await search(question, knowledge.top_k or DEFAULT_TOP_K))
    if not hits:
        return messages
    cite(citations, hits)
    text = passages(hits)
    if messages and isinstance(messages[0], SystemMessage):
        system = messages[0]
        merged = f"{message_text(system).rstrip()}\n\n{text}".strip()
        return [system.model_copy(update={"content": merged}), *messages[1:]]
    return [SystemMessage(text), *messages]
