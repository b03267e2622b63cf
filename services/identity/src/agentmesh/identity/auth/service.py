"""Accounts and sessions: register, login with throttling, refresh rotation, logout."""

from __future__ import annotations

import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentmesh.identity.auth.models import LoginFailure, RefreshToken, RefreshTokenFamily
from agentmesh.identity.auth.passwords import check_password_policy
from agentmesh.identity.auth.schemas import TokenPair
from agentmesh.identity.auth.tokens import TokenIssuer
from agentmesh.identity.crypto import EmailHasher, Passwords, hash_token
from agentmesh.identity.errors import (
    AccountDeactivated,
    EmailTaken,
    InvalidCredentials,
    InvalidRefreshToken,
    TooManyAttempts,
)
from agentmesh.identity.settings import IdentitySettings
from agentmesh.identity.users.models import User
from agentmesh.identity.users.schemas import email_key
from agentmesh.identity.workspaces import service as workspaces
from agentmesh.shared.db import rowcount
from agentmesh.shared.events.contracts import SessionsRevoked, UserRegistered
from agentmesh.shared.events.outbox import Outbox


@dataclass
class AuthService:
    settings: IdentitySettings
    passwords: Passwords
    tokens: TokenIssuer
    outbox: Outbox
    #: For effects that must survive an error response (failed logins, reuse revocation).
    sessionmaker: async_sessionmaker[AsyncSession]
    #: Keyed digests of erased emails.
    emails: EmailHasher

    async def register(
        self,
        session: AsyncSession,
        *,
        email: str,
        password: str,
        name: str,
        roles: list[str] | None = None,
    ) -> User:
        """Create an account and emit ``identity.user.registered``."""
        check_password_policy(password, email=email)
        if await session.scalar(select(User.id).where(User.email_key == email_key(email))):
            raise EmailTaken(f"{email} is already registered")
        return await self.create_user(
            session,
            email=email,
            name=name,
            password_hash=await self.passwords.hash(password),
            roles=roles,
        )

    async def create_user(
        self,
        session: AsyncSession,
        *,
        email: str,
        name: str,
        password_hash: str | None = None,
        roles: list[str] | None = None,
    ) -> User:
        """Insert a user (no password: one made by OpenID Connect sign-in), emit
        ``identity.user.registered`` and make their personal workspace."""
        user = User(
            email=email,
            email_key=email_key(email),
            name=name.strip(),
            password_hash=password_hash,
            roles=roles or ["user"],
            is_active=True,
        )
        session.add(user)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:  # a concurrent registration of the same email
            raise EmailTaken(f"{email} is already registered") from exc
        await session.refresh(user)
        await self.outbox.add(
            session,
            UserRegistered(user_id=user.id, email=user.email, name=user.name, roles=user.roles),
        )
        await workspaces.create_personal(session, self.outbox, user)
        return user

    # ------------------------------------------------------------------ login

    async def _check_throttle(self, session: AsyncSession, email: str, ip: str) -> None:
        window = timedelta(seconds=self.settings.login_failure_window_seconds)
        since = datetime.now(UTC) - window
        for column, value, limit in (
            (LoginFailure.email, email, self.settings.login_max_failures_per_account),
            (LoginFailure.ip, ip, self.settings.login_max_failures_per_ip),
        ):
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(LoginFailure.failed_at)).where(
                        column == value, LoginFailure.failed_at > since
                    )
                )
            ).one()
            if count >= limit:
                retry_after = (oldest + window - datetime.now(UTC)).total_seconds()
                raise TooManyAttempts(
                    "Too many failed logins; try again later.",
                    headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
                )

    async def _record_failure(self, email: str, ip: str) -> None:
        async with self.sessionmaker() as session, session.begin():
            session.add(LoginFailure(email=email, ip=ip))

    async def prune_login_failures(self) -> int:
        """Delete failed logins older than the throttling window (they no longer count,
        and an email or address is not kept longer than it is needed); returns how many."""
        window = timedelta(seconds=self.settings.login_failure_window_seconds)
        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(LoginFailure).where(LoginFailure.failed_at < func.now() - window)
            )
        return rowcount(result)

    async def login(
        self,
        session: AsyncSession,
        *,
        email: str,
        password: str,
        ip: str,
        user_agent: str | None = None,
    ) -> TokenPair:
        """Exchange credentials for a token pair (a new refresh-token family). The email
        matches whatever its case."""
        key = email_key(email)
        await self._check_throttle(session, key, ip)
        user = await session.scalar(select(User).where(User.email_key == key))
        # Unknown email or wrong password: the same work (one Argon2 verify) and answer.
        if not await self.passwords.verify(user.password_hash if user else None, password):
            await self._record_failure(key, ip)
            raise InvalidCredentials("Invalid email or password.")
        assert user is not None and user.password_hash is not None
        if not user.is_active:
            raise AccountDeactivated("This account is deactivated.")
        if self.passwords.needs_rehash(user.password_hash):
            user.password_hash = await self.passwords.hash(password)
        await session.execute(delete(LoginFailure).where(LoginFailure.email == key))
        return await self.start_session(
            session, user, method="password", user_agent=user_agent, ip=ip
        )

    async def start_session(
        self,
        session: AsyncSession,
        user: User,
        *,
        method: str,
        user_agent: str | None,
        ip: str | None,
    ) -> TokenPair:
        """A new login session (refresh-token family) and its first token pair."""
        family = RefreshTokenFamily(
            user_id=user.id,
            workspace_id=user.last_workspace_id,
            method=method,
            user_agent=(user_agent or "")[:512] or None,
            ip=ip,
        )
        session.add(family)
        await session.flush()
        return await self._pair(session, user, family)

    async def bound_workspace(
        self, session: AsyncSession, user: User, wanted: uuid.UUID | None
    ) -> tuple[uuid.UUID, str]:
        """The workspace tokens are bound to: ``wanted`` while the user is still a member
        of it, else their personal workspace."""
        if wanted is not None:
            role = await workspaces.role_of(session, wanted, user.id)
            if role is not None:
                return wanted, role
        personal = await workspaces.personal_of(session, user.id)
        return personal.id, "owner"

    async def _pair(
        self, session: AsyncSession, user: User, family: RefreshTokenFamily
    ) -> TokenPair:
        workspace_id, role = await self.bound_workspace(session, user, family.workspace_id)
        family.workspace_id = workspace_id
        family_id = family.id
        refresh_token = secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                family_id=family_id,
                token_hash=hash_token(refresh_token),
                expires_at=datetime.now(UTC)
                + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
            )
        )
        access_token, expires_in = await self.tokens.issue(
            session,
            user=user,
            family_id=family_id,
            workspace_id=workspace_id,
            workspace_role=role,
        )
        return TokenPair(
            access_token=access_token, refresh_token=refresh_token, expires_in=expires_in
        )

    # ------------------------------------------------------------------ refresh

    async def refresh(self, session: AsyncSession, refresh_token: str) -> TokenPair:
        """Rotate a refresh token. Presenting a rotated token again revokes its family."""
        token_hash = hash_token(refresh_token)
        # Atomic: of two concurrent uses exactly one matches ``rotated_at IS NULL``.
        rotated = (
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.token_hash == token_hash, RefreshToken.rotated_at.is_(None))
                .values(rotated_at=func.now())
                .returning(RefreshToken.family_id, RefreshToken.expires_at)
            )
        ).first()
        if rotated is None:
            family_id = await session.scalar(
                select(RefreshToken.family_id).where(RefreshToken.token_hash == token_hash)
            )
            if family_id is not None:
                await self._revoke_family_now(family_id, reason="refresh token reuse")
            raise InvalidRefreshToken("The refresh token is invalid or was already used.")
        family = await session.get(RefreshTokenFamily, rotated.family_id)
        if family is None or family.revoked_at is not None:
            raise InvalidRefreshToken("This session has ended.")
        if rotated.expires_at <= datetime.now(UTC):
            raise InvalidRefreshToken("The refresh token has expired.")
        user = await session.get(User, family.user_id)
        if user is None or not user.is_active:
            raise InvalidRefreshToken("This account is not active.")
        family.last_used_at = datetime.now(UTC)
        return await self._pair(session, user, family)

    async def switch(
        self, session: AsyncSession, user: User, family_id: uuid.UUID, workspace_id: uuid.UUID
    ) -> TokenPair:
        """A new token pair bound to ``workspace_id``, in the same login session; later
        logins start there too."""
        if await workspaces.role_of(session, workspace_id, user.id) is None:
            raise workspaces.WorkspaceNotFound("No such workspace.")
        family = await session.get(RefreshTokenFamily, family_id, with_for_update=True)
        if family is None or family.revoked_at is not None or family.user_id != user.id:
            raise InvalidRefreshToken("This session has ended.")
        family.workspace_id = workspace_id
        user.last_workspace_id = workspace_id
        return await self._pair(session, user, family)

    async def _revoke_family_now(self, family_id: uuid.UUID, *, reason: str) -> None:
        async with self.sessionmaker() as session, session.begin():
            revoked = await session.execute(
                update(RefreshTokenFamily)
                .where(RefreshTokenFamily.id == family_id, RefreshTokenFamily.revoked_at.is_(None))
                .values(revoked_at=func.now(), revoked_reason=reason)
                .returning(RefreshTokenFamily.user_id)
            )
            user_id = revoked.scalar()
            if user_id is not None:
                await self.outbox.add(
                    session,
                    SessionsRevoked(user_id=user_id, session_ids=[family_id], reason=reason),
                )

    async def revoke_families(
        self,
        session: AsyncSession,
        user_id: uuid.UUID,
        *,
        reason: str,
        only: uuid.UUID | None = None,
        keep: uuid.UUID | None = None,
    ) -> None:
        """Revoke the user's sessions: one (``only``), or all but ``keep``; emits
        ``identity.session.revoked`` so every service refuses their access tokens."""
        statement = update(RefreshTokenFamily).where(
            RefreshTokenFamily.user_id == user_id, RefreshTokenFamily.revoked_at.is_(None)
        )
        if only is not None:
            statement = statement.where(RefreshTokenFamily.id == only)
        if keep is not None:
            statement = statement.where(RefreshTokenFamily.id != keep)
        revoked = await session.scalars(
            statement.values(revoked_at=func.now(), revoked_reason=reason).returning(
                RefreshTokenFamily.id
            )
        )
        session_ids = list(revoked)
        if session_ids:
            await self.outbox.add(
                session, SessionsRevoked(user_id=user_id, session_ids=session_ids, reason=reason)
            )
