"""What the gateway's routes take from the app, as typed ``Annotated`` dependencies
(``shared.deps``) instead of reading ``request.app.state``."""

from __future__ import annotations

from typing import Annotated

from agentmesh.gateway.docs import DocsCache
from agentmesh.shared.deps import from_state

#: The merged OpenAPI and AsyncAPI documents of the services.
AppDocs = Annotated[DocsCache, from_state("docs")]
