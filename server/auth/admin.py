"""Account administration from the server's shell (``loaxa user …``, ``loaxa token …``).

For the first administrator when bootstrap settings are not wanted, and for issuing
tokens to systems on the server itself. Whoever can run this can read the database
anyway; the audit log still names the operating-system user that did it.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlmodel import Session

from server.areas import seed_areas
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.errors import AuthError
from server.auth.permissions import Role
from server.auth.service import add_grant, create_user, find_user, issue_token
from server.db import create_tables, make_engine, utcnow
from server.settings import Settings


def cli_actor() -> Actor:
    return Actor(kind="system", name=f"cli:{getpass.getuser()}")


@contextmanager
def database(settings: Settings) -> Iterator[Session]:
    """The server's database, with its tables and areas, as the server would open it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    try:
        create_tables(engine)
        with Session(engine) as session:
            seed_areas(session, settings.seed_province_codes)
            yield session
    finally:
        engine.dispose()


def create_user_with_role(
    settings: Settings,
    username: str,
    password: str | None,
    role: Role | None,
    area_code: str | None,
    display_name: str = "",
) -> str:
    """Create a user (optionally with one role); returns a one-line summary."""
    if (role is None) != (area_code is None):
        raise AuthError("give --role and --area together")
    with database(settings) as session:
        now = utcnow()
        user = create_user(session, username, password, now, display_name)
        if role is not None and area_code is not None:
            add_grant(session, user, role, area_code, now)
        grants = [f"{role.value}@{area_code}"] if role is not None else []
        record_audit(
            session,
            cli_actor(),
            "user.create",
            "user",
            str(user.id),
            after={"username": user.username, "grants": grants, "service_account": not password},
        )
        session.commit()
        return f"created user {user.username} (id {user.id}) {' '.join(grants)}".rstrip()


def grant_role(settings: Settings, username: str, role: Role, area_code: str) -> str:
    with database(settings) as session:
        user = find_user(session, username)
        if user is None:
            raise AuthError(f"user {username!r} does not exist")
        if not add_grant(session, user, role, area_code, utcnow()):
            return f"{user.username} already is {role.value} in {area_code}"
        record_audit(
            session,
            cli_actor(),
            "user.grant",
            "user",
            str(user.id),
            after={"grant": f"{role.value}@{area_code}"},
        )
        session.commit()
        return f"{user.username} is now {role.value} in {area_code}"


def create_token(
    settings: Settings, username: str, name: str, expires_in_days: float | None
) -> str:
    """Issue a token for ``username`` and return it (it is never shown again)."""
    with database(settings) as session:
        user = find_user(session, username)
        if user is None:
            raise AuthError(f"user {username!r} does not exist")
        now = utcnow()
        expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
        token, raw = issue_token(session, user, name, now, expires_at)
        record_audit(
            session,
            cli_actor(),
            "token.create",
            "token",
            str(token.id),
            after={"name": name, "user": user.username, "expires_at": expires_at},
        )
        session.commit()
        return raw
