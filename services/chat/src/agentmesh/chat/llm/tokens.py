"""Token counting that never touches the network.

``count_tokens`` uses tiktoken's ``cl100k_base`` when its BPE file is already in tiktoken's
cache (``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``)
and matches the published hash. The file is then parsed here, so tiktoken never gets the
chance to download it: tiktoken fetches the file on first use, which a chat service must
not do in the middle of a request (or at all, offline).

Without the file, the count is an approximation. It counts the regex pieces ``\\w+|[^\\w\\s]``,
that is words and single punctuation marks:

- an ASCII word of up to 8 characters is one token, and a longer one is ``ceil(len / 4)``;
- a run of digits is ``ceil(len / 3)``, because cl100k splits numbers into groups of three;
- a word with non-ASCII characters is one token per character, since CJK text and accented
  scripts use about one token per character or more in cl100k;
- each punctuation mark is one token, and whitespace is free.

For English prose this tracks cl100k to within roughly 10-15% and errs high on long words,
numbers and symbols. It has not been measured here, because no cl100k file was available
offline. It is an estimate for keeping prompts inside a window, not for billing. Usage
reported by a provider always wins over it.

Messages add OpenAI's chat overhead: 4 tokens per message and 3 to prime the reply.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

TOKENS_PER_MESSAGE = 4
REPLY_PRIMING_TOKENS = 3
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_PIECES = re.compile(r"\w+|[^\w\s]")
_CACHED_TEXT_CHARS = 4096


def _cached_cl100k_file() -> bytes | None:
    """The cl100k_base BPE file from tiktoken's cache, if present and verified."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return None
    path = os.path.join(cache_dir, hashlib.sha1(_CL100K_URL.encode()).hexdigest())  # noqa: S324
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == _CL100K_SHA256 else None


@functools.cache
def _cl100k() -> Any | None:
    """The cl100k encoding built from the cached file alone, or None.

    The ranks are parsed here, the way tiktoken's loader does, because tiktoken's loader may
    fetch the file or write copies into its cache. This way nothing leaves the process.
    """
    data = _cached_cl100k_file()
    if data is None:
        return None
    try:
        import tiktoken

        ranks = {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in data.splitlines() if line)
        }
        specials = {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        }
        return tiktoken.Encoding(
            name="cl100k_base",
            pat_str=_CL100K_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=specials,
        )
    except Exception:
        return None


def uses_tiktoken() -> bool:
    """True when counts come from cl100k_base, False when they are the approximation."""
    return _cl100k() is not None


def approximate_tokens(text: str) -> int:
    """The offline approximation described in the module docstring."""
    if len(text) <= _CACHED_TEXT_CHARS:  # history is re-counted on every turn
        return _approximate_cached(text)
    return _approximate(text)


@functools.lru_cache(maxsize=16384)
def _approximate_cached(text: str) -> int:
    return _approximate(text)


def _approximate(text: str) -> int:
    total = 0
    for piece in _PIECES.findall(text):
        if not piece[0].isalnum() and piece[0] != "_":
            total += 1
        elif not piece.isascii():
            total += len(piece)
        elif piece.isdigit():
            total += math.ceil(len(piece) / 3)
        else:
            total += 1 if len(piece) <= 8 else math.ceil(len(piece) / 4)
    return total


def count_tokens(text: str) -> int:
    """Tokens in ``text``: exact cl100k when cached locally, else the approximation."""
    if not text:
        return 0
    encoding = _cl100k()
    if encoding is not None:
        return len(encoding.encode(text, disallowed_special=()))
    return approximate_tokens(text)


def message_text(message: BaseMessage) -> str:
    """The text a message contributes to the prompt (text blocks only)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def count_one_message(message: BaseMessage) -> int:
    """Tokens of a single message, with its per-message overhead."""
    total = TOKENS_PER_MESSAGE + count_tokens(message_text(message))
    if isinstance(message, AIMessage):
        for call in message.tool_calls:
            total += count_tokens(call["name"]) + count_tokens(json.dumps(call["args"]))
            total += TOKENS_PER_MESSAGE
    if isinstance(message, ToolMessage):
        total += count_tokens(message.tool_call_id)
    if message.name:
        total += count_tokens(message.name) + 1
    return total


def count_message_tokens(messages: Sequence[BaseMessage]) -> int:
    """Tokens of a whole prompt: each message plus the reply priming."""
    if not messages:
        return 0
    return sum(count_one_message(m) for m in messages) + REPLY_PRIMING_TOKENS
