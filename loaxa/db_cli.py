"""``loaxa db …``: the database schema, migrated with Alembic (see ``server.schema``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

db_app = typer.Typer(help="The server's database: schema revision and migrations.")

DatabaseOption = Annotated[
    str | None, typer.Option(help="defaults to the server's (LOAXA_* settings)")
]


def _engine(database_url: str | None) -> Engine:
    from server.db import make_engine
    from server.settings import Settings

    if database_url is None:
        settings = Settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database_url = settings.db_url
    return make_engine(database_url)


@db_app.command("upgrade")
def upgrade_cmd(database_url: DatabaseOption = None) -> None:
    """Migrate the database to this version's schema, keeping every row.

    Adopts a database made by the release of 2026-11-25 (before migrations). Back up
    first; a failed migration is rolled back.
    """
    from loaxa_protocol.errors import LoaxaError
    from server.schema import upgrade

    engine = _engine(database_url)
    try:
        before, after = upgrade(engine)
    except LoaxaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"already at {after}: nothing to do")
    else:
        typer.echo(f"upgraded {before or 'an empty database'} → {after}")


@db_app.command("current")
def current_cmd(database_url: DatabaseOption = None) -> None:
    """Print the database's schema revision and this version's; exit 1 when they differ."""
    from server.schema import state

    engine = _engine(database_url)
    try:
        now = state(engine)
    finally:
        engine.dispose()
    if now.legacy:
        shown = "none (made before migrations: run `loaxa db upgrade`)"
    else:
        shown = now.current or "none (empty)"
    typer.echo(f"database: {shown}\nthis version: {now.head}")
    raise typer.Exit(0 if now.up_to_date else 1)


@db_app.command("check")
def check_cmd(database_url: DatabaseOption = None) -> None:
    """Fail when the models and the migrated schema differ (a migration is missing)."""
    from server.schema import differences, upgrade

    engine = _engine(database_url)
    try:
        upgrade(engine)
        found = differences(engine)
    finally:
        engine.dispose()
    for diff in found:
        typer.echo(f"differs: {diff}", err=True)
    if found:
        typer.echo("the models and the migrations differ: write a migration", err=True)
        raise typer.Exit(1)
    typer.echo("the migrations describe the models exactly")
