"""What the gateway's routes take from the app, as typed ``Annotated`` dependencies
(``shared.deps``) instead of reading ``request.app.state``."""

from __future__ import annotations

from typing import Annotated

from agentmesh.gateway.docs import DocsCache
from agentmesh.gateway.proxy import Proxy
from agentmesh.shared.deps import from_state

#: Forwards a request to its upstream (opened at start-up with the HTTP client).
AppProxy = Annotated[Proxy, from_state("proxy")]
#: The merged OpenAPI and AsyncAPI documents of the services.
AppDocs = Annotated[DocsCache, from_state("docs")]
