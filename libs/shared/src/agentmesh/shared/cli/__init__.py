"""The ``agentmesh`` command. Services add groups (``agentmesh admin``, ``agentmesh keys``)
through the ``agentmesh.cli`` entry-point group, so this package never imports them."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer

#: What ``agentmesh migrate`` migrates by default (kept equal to migrations.MIGRATING_SERVICES,
#: which is not imported here so that ``agentmesh --help`` stays fast and never needs Alembic).
DEFAULT_MIGRATING_SERVICES = ("identity", "agents", "chat")

app = typer.Typer(
    help="AgentMesh: a self-hostable backend for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def up(
    port: Annotated[
        int | None, typer.Option(help="Gateway port [env AGENTMESH_GATEWAY_PORT, 8080]")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env AGENTMESH_DATA_DIR, ./.agentmesh]")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the gateway binds")] = "127.0.0.1",
    replicas: Annotated[
        str | None,
        typer.Option(help="Replicas per service behind its port, e.g. gateway=2,chat=2"),
    ] = None,
) -> None:
    """Run the whole platform: embedded Postgres and NATS, migrations, the four services."""
    from agentmesh.shared.cli.up import run_up

    raise typer.Exit(run_up(port=port, data_dir=data_dir, host=host, replicas=replicas))


@app.command()
def migrate(
    services: Annotated[list[str] | None, typer.Argument(help="Services to migrate")] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="AGENTMESH_DATABASE_URL", help="SQLAlchemy URL")
    ] = None,
) -> None:
    """Apply each service's migrations (run this as a job, not at replica start)."""
    if not database_url:
        typer.echo("agentmesh migrate: set AGENTMESH_DATABASE_URL or --database-url", err=True)
        raise typer.Exit(1)
    selected = services or list(DEFAULT_MIGRATING_SERVICES)
    unknown = [s for s in selected if s not in DEFAULT_MIGRATING_SERVICES]
    if unknown:
        known = ", ".join(DEFAULT_MIGRATING_SERVICES)
        typer.echo(f"agentmesh migrate: unknown service {unknown[0]!r} (one of {known})", err=True)
        raise typer.Exit(1)
    from agentmesh.shared.migrations import upgrade

    for service in selected:
        upgrade(service, database_url)
        typer.echo(f"{service}: migrated to head")


secrets_app = typer.Typer(help="Secrets stored encrypted at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("rotate")
def rotate_secrets() -> None:
    """Re-encrypt every stored secret under the newest key of each encryption setting.

    Put the new key first in the setting (``IDENTITY_KEY_ENCRYPTION_KEY=new,old``,
    ``AGENTS_PROVIDER_ENCRYPTION_KEY=new,old``), roll the services, run this, then drop
    the old key. Each service installed here registers its part (``agentmesh.secrets``).
    """
    import asyncio

    from pydantic import ValidationError

    parts = sorted(entry_points(group="agentmesh.secrets"), key=lambda e: e.name)
    if not parts:
        typer.echo(
            "agentmesh secrets rotate: no service with stored secrets is installed", err=True
        )
        raise typer.Exit(1)
    for entry in parts:
        try:
            counts = asyncio.run(entry.load()())
        except ValidationError as exc:
            typer.echo(
                f"agentmesh secrets rotate: {entry.name}: {exc.errors()[0]['msg']}", err=True
            )
            raise typer.Exit(1) from None
        except RuntimeError as exc:  # a ciphertext no configured key can read
            typer.echo(f"agentmesh secrets rotate: {entry.name}: {exc}", err=True)
            raise typer.Exit(1) from None
        for what, rewritten in counts.items():
            typer.echo(f"{what}: {rewritten} re-encrypted")


def _add_service_commands() -> None:
    """Add every ``agentmesh.cli`` entry point (a ``typer.Typer``) as a group of its name."""
    for entry in entry_points(group="agentmesh.cli"):
        try:
            group = entry.load()
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            logging.getLogger("agentmesh.cli").warning("cannot load %s: %s", entry.name, exc)
            continue
        app.add_typer(group, name=entry.name)


_add_service_commands()


def main() -> None:
    """Entry point of the ``agentmesh`` console script."""
    app()
