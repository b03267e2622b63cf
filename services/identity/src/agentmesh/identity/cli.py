"""``agentmesh admin …`` and ``agentmesh keys …`` (registered via the ``agentmesh.cli``
entry-point group, so the shared CLI never imports identity)."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

admin_app = typer.Typer(help="Administer identity: create the first admin.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys for access tokens.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"agentmesh: {message}", err=True)
    raise typer.Exit(1)


async def _with_session(work: Callable[[Any, AsyncSession], Awaitable[Any]]) -> Any:
    from pydantic import ValidationError

    from agentmesh.identity.app import build_auth
    from agentmesh.identity.base import EVENT_TABLES
    from agentmesh.identity.settings import IdentitySettings
    from agentmesh.shared.runtime import ServiceRuntime

    try:
        settings = IdentitySettings()
    except ValidationError as exc:
        _fail(str(exc.errors()[0]["msg"]))
    runtime = ServiceRuntime(
        "identity", settings, tables=EVENT_TABLES, use_broker=False, configure_logs=False
    )
    auth = build_auth(settings, runtime)
    assert runtime.sessionmaker is not None and runtime.engine is not None
    try:
        async with runtime.sessionmaker() as session, session.begin():
            return await work(auth, session)
    finally:
        await runtime.engine.dispose()


@admin_app.command("create")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's email")],
    name: Annotated[str, typer.Option(help="Display name")] = "Administrator",
) -> None:
    """Create an admin. The password is prompted for, or read from stdin when piped."""
    from agentmesh.identity.users.schemas import normalize_email

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            _fail("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not 12 <= len(password) <= 256:
        _fail("the password must be 12 to 256 characters")
    try:
        email = normalize_email(email)
    except ValueError as exc:
        _fail(str(exc))

    async def work(auth: Any, session: AsyncSession) -> Any:
        return await auth.register(
            session, email=email, password=password, name=name, roles=["admin", "user"]
        )

    from agentmesh.shared.errors import AppError

    try:
        user = asyncio.run(_with_session(work))
    except AppError as exc:
        _fail(exc.detail or exc.title)
    typer.echo(f"admin {user.email} created ({user.id})")


@keys_app.command("rotate")
def rotate_keys() -> None:
    """Start signing with a new key; old keys stay published until their tokens expire."""

    async def work(auth: Any, session: AsyncSession) -> Any:
        return await auth.tokens.keys.rotate(session)

    key = asyncio.run(_with_session(work))
    typer.echo(f"new signing key {key.kid}; replicas pick it up within their key cache time")


@keys_app.command("list")
def list_keys() -> None:
    """List the published signing keys."""

    async def work(auth: Any, session: AsyncSession) -> Any:
        return [
            (k.kid, k.created_at, k.retired_at) for k in await auth.tokens.keys.published(session)
        ]

    for kid, created, retired in asyncio.run(_with_session(work)):
        state = f"retired {retired:%Y-%m-%d %H:%M}" if retired else "active"
        typer.echo(f"{kid}  created {created:%Y-%m-%d %H:%M}  {state}")
