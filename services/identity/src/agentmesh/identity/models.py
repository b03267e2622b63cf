"""Every table of the ``identity`` schema (Alembic reads ``metadata`` from here)."""

from agentmesh.identity.api_keys.models import ApiKey
from agentmesh.identity.auth.models import LoginFailure, RefreshToken, RefreshTokenFamily
from agentmesh.identity.base import EVENT_TABLES, SCHEMA, Base
from agentmesh.identity.erasure.models import Erasure
from agentmesh.identity.keys.models import SigningKey
from agentmesh.identity.oidc.models import LoginCode, OidcFlow, OidcIdentity
from agentmesh.identity.users.models import User
from agentmesh.identity.workspaces.models import Invitation, Membership, Workspace

metadata = Base.metadata

__all__ = [
    "EVENT_TABLES",
    "SCHEMA",
    "ApiKey",
    "Erasure",
    "Invitation",
    "LoginCode",
    "LoginFailure",
    "Membership",
    "OidcFlow",
    "OidcIdentity",
    "RefreshToken",
    "RefreshTokenFamily",
    "SigningKey",
    "User",
    "Workspace",
    "metadata",
]
