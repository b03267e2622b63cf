"""The chat service's model layer: providers, token counting, memory window, streaming."""

from agentmesh.chat.llm.memory import build_prompt, plan_prompt, turns_to_summarize
from agentmesh.chat.llm.offline import OFFLINE_MODEL, TITLE_INSTRUCTION, OfflineChatModel
from agentmesh.chat.llm.resolve import ModelMisconfigured, resolve_chat_model
from agentmesh.chat.llm.streaming import (
    ModelCallFailed,
    StreamInterrupted,
    classify_error,
    stream_with_retry,
)
from agentmesh.chat.llm.tokens import count_message_tokens, count_tokens

__all__ = [
    "OFFLINE_MODEL",
    "TITLE_INSTRUCTION",
    "ModelCallFailed",
    "ModelMisconfigured",
    "OfflineChatModel",
    "StreamInterrupted",
    "build_prompt",
    "classify_error",
    "count_message_tokens",
    "count_tokens",
    "plan_prompt",
    "resolve_chat_model",
    "stream_with_retry",
    "turns_to_summarize",
]
