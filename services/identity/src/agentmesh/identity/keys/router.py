from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from agentmesh.identity.deps import Keys
from agentmesh.shared.db import Session

router = APIRouter(tags=["keys"])


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(response: Response, session: Session, keys: Keys) -> dict[str, Any]:
    """The Ed25519 public keys (JWK Set) services use to verify AgentMesh access tokens.

    Retired keys stay here until every token they signed has expired."""
    response.headers["Cache-Control"] = "public, max-age=60"
    return await keys.jwks(session)
