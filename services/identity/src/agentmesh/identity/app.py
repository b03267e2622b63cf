"""The identity service: app factory and lifespan."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.identity import denylist, events
from agentmesh.identity.api_keys.router import internal_router
from agentmesh.identity.api_keys.router import router as api_keys_router
from agentmesh.identity.auth.router import router as auth_router
from agentmesh.identity.auth.service import AuthService
from agentmesh.identity.auth.sessions import router as sessions_router
from agentmesh.identity.auth.tokens import TokenIssuer
from agentmesh.identity.base import EVENT_TABLES
from agentmesh.identity.crypto import EmailHasher, KeyEncryption, Passwords
from agentmesh.identity.erasure.models import Erasure
from agentmesh.identity.keys.router import router as keys_router
from agentmesh.identity.keys.service import SigningKeyStore
from agentmesh.identity.oidc.client import OidcClient
from agentmesh.identity.oidc.router import router as oidc_router
from agentmesh.identity.oidc.service import OidcService
from agentmesh.identity.settings import IdentitySettings
from agentmesh.identity.users import rpc as profile_rpc
from agentmesh.identity.users.models import User
from agentmesh.identity.users.router import router as users_router
from agentmesh.identity.users.schemas import email_key, normalize_email
from agentmesh.identity.workspaces import readmodel
from agentmesh.identity.workspaces.router import router as workspaces_router
from agentmesh.shared.runtime import ServiceRuntime

logger = logging.getLogger("agentmesh.identity")


def build_auth(settings: IdentitySettings, runtime: ServiceRuntime) -> AuthService:
    """The use-case object routes and the CLI share."""
    keys = SigningKeyStore(
        KeyEncryption(settings.key_encryption_key.get_secret_value()),
        token_ttl_seconds=settings.access_token_ttl_seconds,
        cache_seconds=settings.signing_key_cache_seconds,
    )
    assert runtime.outbox is not None and runtime.sessionmaker is not None
    return AuthService(
        settings=settings,
        passwords=Passwords(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        ),
        tokens=TokenIssuer(keys, settings.common, ttl_seconds=settings.access_token_ttl_seconds),
        outbox=runtime.outbox,
        sessionmaker=runtime.sessionmaker,
        emails=EmailHasher(
            settings.email_hash_key.get_secret_value() if settings.email_hash_key else None,
            settings.key_encryption_key.get_secret_value(),
        ),
    )


async def bootstrap(app: FastAPI) -> None:
    """Make sure a signing key exists, and create the configured first admin."""
    auth: AuthService = app.state.auth
    settings: IdentitySettings = app.state.settings
    async with app.state.sessionmaker() as session, session.begin():
        await auth.tokens.keys.ensure_key(session)
        email, password = settings.bootstrap_admin_email, settings.bootstrap_admin_password
        if email and password:
            email = normalize_email(email)
            if not await session.scalar(select(User.id).where(User.email_key == email_key(email))):
                await auth.register(
                    session,
                    email=email,
                    password=password.get_secret_value(),
                    name="Administrator",
                    roles=["admin", "user"],
                )
                logger.info("bootstrap admin created", extra={"email": email})
        await upgrade_email_hashes(auth, session)


async def upgrade_email_hashes(auth: AuthService, session: AsyncSession) -> None:
    """Erasures recorded before emails were keyed hold a bare SHA-256: key them now."""
    legacy = await session.execute(
        select(Erasure.user_id, Erasure.email_hash).where(
            Erasure.email_hash.not_like(f"{EmailHasher.PREFIX}%")
        )
    )
    for user_id, stored in legacy.all():
        keyed = auth.emails.upgrade(stored)
        if keyed is not None:
            await session.execute(
                update(Erasure).where(Erasure.user_id == user_id).values(email_hash=keyed)
            )


async def prune_login_failures(app: FastAPI) -> None:
    """Start the sweep of expired failed logins (every window, at most every minute)."""
    auth: AuthService = app.state.auth
    oidc: OidcService = app.state.oidc
    interval = min(auth.settings.login_failure_window_seconds, 60)

    async def sweep() -> None:
        while True:
            try:
                await auth.prune_login_failures()
                await oidc.prune()
            except Exception:  # the database may be away for a while: try again later
                logger.warning("cannot prune failed logins", exc_info=True)
            await asyncio.sleep(interval)

    app.state.login_failure_sweep = asyncio.create_task(sweep(), name="login-failure-sweep")


async def stop_pruning(app: FastAPI) -> None:
    task: asyncio.Task[None] | None = getattr(app.state, "login_failure_sweep", None)
    if task is not None:
        task.cancel()
        # Not waited for past 5 s: a sweep cancelled inside a query may unwind slowly.
        await asyncio.wait({task}, timeout=5)
    await app.state.oidc.client.aclose()


def create_app(settings: IdentitySettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the identity app; ``runtime_options`` go to ``ServiceRuntime``."""
    settings = settings or IdentitySettings.load()
    runtime = ServiceRuntime("identity", settings, tables=EVENT_TABLES, **runtime_options)  # type: ignore[arg-type]
    events.register(runtime)
    readmodel.register(runtime, resync_seconds=settings.membership_resync_seconds)
    denylist.register(runtime, settings)
    assert runtime.broker is not None
    profile_rpc.register(
        runtime.broker, runtime.sessionmaker, settings.internal_token.get_secret_value()
    )
    runtime.startup_hooks.extend([bootstrap, prune_login_failures])
    runtime.shutdown_hooks.append(stop_pruning)
    app = runtime.create_app(
        title="AgentMesh identity",
        description="Accounts, sessions, workspaces, API keys and signing keys.",
        # First: the busiest read (GET /users/me) is matched before the other routers'
        # routes are tried (no paths overlap, so the order changes nothing else).
        routers=[
            users_router,
            auth_router,
            sessions_router,
            oidc_router,
            workspaces_router,
            api_keys_router,
            keys_router,
            internal_router,
        ],
    )
    app.state.auth = build_auth(settings, runtime)
    app.state.oidc = OidcService(
        settings,
        app.state.auth,
        OidcClient(
            settings.outbound_policy,
            timeout=settings.oidc_http_timeout_seconds,
            cache_seconds=settings.oidc_cache_seconds,
        ),
    )
    app.state.tokens = app.state.auth.tokens
    app.state.keys = app.state.auth.tokens.keys
    return app
