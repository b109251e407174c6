"""Credentials for tests: a user with the given roles and a bearer token for it.

Made straight in the database (no password, so no argon2 cost per test); the HTTP
sign-in path has its own tests in test_auth_api.py.
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from server.auth.permissions import Role
from server.auth.service import add_grant, create_user, find_user, issue_token
from server.context import ServerContext
from server.db import utcnow

PROVINCE = "04"  # Cao Bằng


def context_of(client: TestClient) -> ServerContext:
    context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
    return context


def make_token(engine: Engine, username: str, *grants: tuple[Role, str]) -> str:
    """A fresh API token for ``username`` (created if missing) holding ``grants``."""
    now = utcnow()
    with Session(engine) as session:
        user = find_user(session, username) or create_user(session, username, None, now)
        for role, area_code in grants:
            add_grant(session, user, role, area_code, now)
        _token, raw = issue_token(session, user, f"test-{username}", now)
        session.commit()
    return raw


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def authenticate(
    client: TestClient, role: Role = Role.PROVINCE_ADMIN, area_code: str = PROVINCE
) -> TestClient:
    """Make every later request of ``client`` carry a token for one role in one area."""
    username = f"{role.value.replace('_', '-')}-{area_code}"
    token = make_token(context_of(client).engine, username, (role, area_code))
    client.headers.update(bearer(token))
    return client
