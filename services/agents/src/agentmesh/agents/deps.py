"""Small shared helpers of the agents service, and the typed dependencies its routes take
from the app (``shared.deps``) instead of reading ``request.app.state``."""

from __future__ import annotations

import hmac
from typing import Annotated

from agentmesh.agents.knowledge.embedding import Embedder
from agentmesh.agents.knowledge.worker import IngestWorker
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.deps import from_state

#: The service's settings.
AppSettings = Annotated[AgentsSettings, from_state("settings")]
#: Encrypts and decrypts provider keys and MCP headers.
AppSecretBox = Annotated[SecretBox, from_state("secret_box")]
#: Embeds text with a knowledge base's model.
AppEmbedder = Annotated[Embedder, from_state("embedder")]
#: The ingest worker, to wake when documents are queued.
AppIngest = Annotated[IngestWorker, from_state("ingest")]


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())
