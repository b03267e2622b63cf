"""The OpenID Connect sign-in flow: authorize, callback, accounts, login codes.

No transaction is open while a provider is called: the flow is consumed in one short
transaction, the provider is asked (token endpoint, JWKS), then the account is found,
linked or created in another."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.identity.auth.schemas import TokenPair
from agentmesh.identity.auth.service import AuthService
from agentmesh.identity.crypto import hash_token
from agentmesh.identity.errors import AccountDeactivated
from agentmesh.identity.oidc.client import OidcClient
from agentmesh.identity.oidc.config import OidcProvider
from agentmesh.identity.oidc.errors import (
    CodeReplayed,
    DomainNotAllowed,
    EmailNotVerified,
    IdentityConflict,
    InvalidLoginCode,
    InvalidState,
    ProviderError,
    ProviderNotFound,
    ReturnUrlNotAllowed,
)
from agentmesh.identity.oidc.models import LoginCode, OidcFlow, OidcIdentity
from agentmesh.identity.settings import IdentitySettings
from agentmesh.identity.users.models import User
from agentmesh.identity.users.schemas import email_key, normalize_email
from agentmesh.shared.crypto import derive_key, split_secrets
from agentmesh.shared.db import rowcount

COOKIE = "agentmesh_oidc"
COOKIE_PATH = "/api/v1/auth/oidc/"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def callback_path(name: str) -> str:
    return f"/api/v1/auth/oidc/{name}/callback"


@dataclass(frozen=True)
class Started:
    url: str
    cookie: str
    max_age: int


@dataclass(frozen=True)
class SignedIn:
    """The callback's outcome: a token pair, or a redirect carrying a login code."""

    tokens: TokenPair | None = None
    redirect: str | None = None


@dataclass
class OidcService:
    settings: IdentitySettings
    auth: AuthService
    client: OidcClient

    def __post_init__(self) -> None:
        newest = (split_secrets(self.settings.key_encryption_key.get_secret_value()) or [""])[0]
        self._key = derive_key(newest, "agentmesh-identity-oidc-state")

    # ------------------------------------------------------------------ helpers

    def provider(self, name: str) -> OidcProvider:
        provider = self.settings.oidc_provider(name)
        if provider is None:
            raise ProviderNotFound(f"No sign-in provider named {name!r}.")
        return provider

    def _derived(self, binding: str, purpose: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{binding}".encode(), "sha256").digest())

    def _cookie(self, *, name: str, state: str, binding: str) -> str:
        now = int(time.time())
        claims = {
            "p": name,
            "st": state,
            "b": binding,
            "iat": now,
            "exp": now + self.settings.oidc_flow_ttl_seconds,
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def _read_cookie(self, cookie: str | None, name: str, state: str) -> str:
        """The browser binding, once the cookie is ours, unexpired, and for this state."""
        if not cookie:
            raise InvalidState("This browser did not start this sign-in (no state cookie).")
        try:
            claims = jwt.decode(
                cookie,
                self._key,
                algorithms=["HS256"],
                options={"require": ["exp", "p", "st", "b"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidState("This sign-in took too long; start again.") from None
        except jwt.PyJWTError:
            raise InvalidState("The sign-in state cookie is invalid.") from None
        if claims["p"] != name or not hmac.compare_digest(str(claims["st"]), state):
            raise InvalidState("The state does not match the one this browser was given.")
        return str(claims["b"])

    # ------------------------------------------------------------------ authorize

    async def start(
        self, session: AsyncSession, name: str, *, base_url: str, return_to: str | None
    ) -> Started:
        """Record a flow and build the provider's authorization URL (PKCE S256)."""
        provider = self.provider(name)
        if return_to is not None and return_to not in self.settings.oidc_return_urls:
            raise ReturnUrlNotAllowed("return_to is not one of IDENTITY_OIDC_RETURN_URLS.")
        discovery = await self.client.discovery(provider)
        state, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        redirect_uri = base_url.rstrip("/") + callback_path(name)
        verifier = self._derived(binding, "pkce")
        ttl = self.settings.oidc_flow_ttl_seconds
        session.add(
            OidcFlow(
                state_hash=hash_token(state),
                provider=name,
                redirect_uri=redirect_uri,
                return_to=return_to,
                expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
            )
        )
        query = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(provider.scopes),
            "state": state,
            "nonce": self._derived(binding, "nonce"),
            "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        url = _with_query(discovery.authorization_endpoint, query)
        return Started(url, self._cookie(name=name, state=state, binding=binding), ttl)

    # ------------------------------------------------------------------ callback

    async def _refuse_replay(self, state: str, code: str) -> None:
        """A callback coming back for a completed flow, or with a code already used, is a
        replay (whatever cookie it carries: the first callback removed it)."""
        async with self.auth.sessionmaker() as session:
            used = await session.scalar(
                select(OidcFlow.state_hash).where(
                    or_(
                        (OidcFlow.state_hash == hash_token(state))
                        & OidcFlow.consumed_at.is_not(None),
                        OidcFlow.code_hash == hash_token(code),
                    )
                )
            )
        if used is not None:
            raise CodeReplayed("This authorization code was already used.")

    async def _consume(self, name: str, state: str, code: str) -> OidcFlow:
        """Mark the flow used (once, across replicas) with the code it brought."""
        try:
            async with self.auth.sessionmaker() as session, session.begin():
                flow = await session.scalar(
                    update(OidcFlow)
                    .where(
                        OidcFlow.state_hash == hash_token(state),
                        OidcFlow.provider == name,
                        OidcFlow.consumed_at.is_(None),
                        OidcFlow.expires_at > func.now(),
                    )
                    .values(consumed_at=func.now(), code_hash=hash_token(code))
                    .returning(OidcFlow)
                )
                if flow is None:
                    used = await session.scalar(
                        select(OidcFlow.consumed_at).where(OidcFlow.state_hash == hash_token(state))
                    )
                    if used is not None:
                        raise CodeReplayed("This sign-in was already completed.")
                    raise InvalidState("No such sign-in in progress (or it expired).")
                return flow
        except IntegrityError:  # the code came back in another flow
            raise CodeReplayed("This authorization code was already used.") from None

    async def callback(
        self,
        name: str,
        params: dict[str, str],
        cookie: str | None,
        *,
        user_agent: str | None,
        ip: str,
    ) -> SignedIn:
        provider = self.provider(name)
        if "error" in params:
            error = params["error"][:64]
            description = params.get("error_description", "")[:200]
            raise ProviderError(f"The provider answered {error}. {description}".strip())
        state, code = params.get("state", ""), params.get("code", "")
        if not state or not code:
            raise InvalidState("The callback lacks its state or code.")
        await self._refuse_replay(state, code)
        binding = self._read_cookie(cookie, name, state)
        flow = await self._consume(name, state, code)
        discovery = await self.client.discovery(provider)
        id_token = await self.client.exchange(
            provider,
            discovery,
            code=code,
            redirect_uri=flow.redirect_uri,
            code_verifier=self._derived(binding, "pkce"),
        )
        claims = await self.client.verify(
            provider, discovery, id_token, nonce=self._derived(binding, "nonce")
        )
        async with self.auth.sessionmaker() as session, session.begin():
            user = await self.account(session, name, provider, claims)
            if flow.return_to is None:
                tokens = await self.auth.start_session(
                    session, user, method=f"oidc:{name}", user_agent=user_agent, ip=ip
                )
                return SignedIn(tokens=tokens)
            login_code = secrets.token_urlsafe(32)
            ttl = self.settings.oidc_login_code_ttl_seconds
            session.add(
                LoginCode(
                    code_hash=hash_token(login_code),
                    user_id=user.id,
                    provider=name,
                    user_agent=user_agent,
                    ip=ip,
                    expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
                )
            )
        return SignedIn(redirect=_with_query(flow.return_to, {"login_code": login_code}))

    # ------------------------------------------------------------------ accounts

    async def account(
        self, session: AsyncSession, name: str, provider: OidcProvider, claims: dict[str, Any]
    ) -> User:
        """The user this provider account signs in as: linked by ``(provider, sub)``, or
        linked by a verified email to an existing account, or created."""
        subject = str(claims["sub"])
        email = _email_of(claims)
        if provider.allowed_domains:
            domain = email.rpartition("@")[2] if email else ""
            if domain not in provider.allowed_domains:
                raise DomainNotAllowed(f"Accounts of {domain or 'no domain'} cannot sign in here.")
        identity = await session.scalar(
            select(OidcIdentity).where(
                OidcIdentity.provider == name, OidcIdentity.subject == subject
            )
        )
        if identity is not None:
            user = await session.get(User, identity.user_id)
            assert user is not None
            if email and _verified(claims):
                identity.email = email
        else:
            if not email or not _verified(claims):
                raise EmailNotVerified(
                    "The provider did not confirm that this email is verified; "
                    "it cannot create or link an account."
                )
            user = await session.scalar(select(User).where(User.email_key == email_key(email)))
            if user is None:
                user = await self.auth.create_user(session, email=email, name=_name_of(claims))
            elif await session.scalar(
                select(OidcIdentity.id).where(
                    OidcIdentity.user_id == user.id, OidcIdentity.provider == name
                )
            ):
                raise IdentityConflict(
                    "That account is already linked to another account of this provider."
                )
            try:
                async with session.begin_nested():
                    session.add(
                        OidcIdentity(user_id=user.id, provider=name, subject=subject, email=email)
                    )
                    await session.flush()
            except IntegrityError:  # the same account signing in twice at once
                raise IdentityConflict("This sign-in raced another one; try again.") from None
        if not user.is_active:
            raise AccountDeactivated("This account is deactivated.")
        return user

    # ------------------------------------------------------------------ login codes

    async def redeem(self, session: AsyncSession, login_code: str) -> TokenPair:
        """Swap a login code (once, within its lifetime) for a token pair."""
        row = (
            await session.execute(
                update(LoginCode)
                .where(
                    LoginCode.code_hash == hash_token(login_code),
                    LoginCode.used_at.is_(None),
                    LoginCode.expires_at > func.now(),
                )
                .values(used_at=func.now())
                .returning(
                    LoginCode.user_id, LoginCode.provider, LoginCode.user_agent, LoginCode.ip
                )
            )
        ).first()
        if row is None:
            raise InvalidLoginCode("The login code is unknown, expired or already used.")
        user = await session.get(User, row.user_id)
        if user is None or not user.is_active:
            raise AccountDeactivated("This account is deactivated.")
        return await self.auth.start_session(
            session, user, method=f"oidc:{row.provider}", user_agent=row.user_agent, ip=row.ip
        )

    async def prune(self) -> int:
        """Delete flows and login codes past their lifetime (a used code a minute later)."""
        async with self.auth.sessionmaker() as session, session.begin():
            grace = timedelta(seconds=self.settings.oidc_flow_ttl_seconds)
            flows = await session.execute(
                delete(OidcFlow).where(OidcFlow.expires_at < func.now() - grace)
            )
            codes = await session.execute(
                delete(LoginCode).where(LoginCode.expires_at < func.now() - grace)
            )
        return rowcount(flows) + rowcount(codes)


def _verified(claims: dict[str, Any]) -> bool:
    """``email_verified: true`` (some providers send the string); Entra ID's
    ``xms_edov`` (email domain owner verified) counts too."""
    return any(claims.get(c) in (True, "true") for c in ("email_verified", "xms_edov"))


def _email_of(claims: dict[str, Any]) -> str | None:
    value = claims.get("email")
    if not isinstance(value, str) or not value:
        return None
    try:
        return normalize_email(value)
    except ValueError:
        return None


def _name_of(claims: dict[str, Any]) -> str:
    name = claims.get("name")
    if not isinstance(name, str) or not name.strip():
        parts = [claims.get("given_name"), claims.get("family_name")]
        name = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    if not name:
        name = str(claims.get("email", "")).partition("@")[0] or "User"
    return name.strip()[:200]


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
