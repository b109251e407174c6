"""The same suite on PostgreSQL: ``LOAXA_TEST_DATABASE_URL`` switches every server.

Set it to a PostgreSQL server's maintenance database, e.g.
``LOAXA_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, and each
integration, browser and fault test gets a fresh database of its own, cloned from a
template migrated once per worker, through ``LOAXA_DATABASE_URL`` — the very setting a
province sets. Servers the tests start in subprocesses inherit it. Without the variable
nothing changes: SQLite files in each test's temporary folder.

Loaded by ``-p tests.database`` (pyproject's pytest options), not by the conftest, so it
stays one concern in one file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text

from server.db import create_tables, make_engine

ENV = "LOAXA_TEST_DATABASE_URL"
# Tests that build a server; unit tests use in-memory SQLite on purpose (logic, not storage).
SERVER_TEST_FOLDERS = ("integration", "browser", "faults")
ADMIN_PG = os.environ.get(ENV, "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
"""A PostgreSQL server the PostgreSQL-only tests make their own databases on."""


def postgres_available(url: str = ADMIN_PG) -> bool:
    """Whether ``url`` answers: the PostgreSQL-only tests skip, with the reason, if not."""
    try:
        engine = make_engine(url)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def _admin(base_url: str) -> Engine:
    return make_engine(base_url).execution_options(isolation_level="AUTOCOMMIT")


def _url_for(base_url: str, name: str) -> str:
    return base_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def postgres_database(base_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (empty, or a copy of ``template``), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    admin = _admin(base_url)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{clone}'))
    try:
        yield _url_for(base_url, name)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def _postgres_template(worker_id: str) -> Iterator[str | None]:
    """A database at this version's schema that each test's database is cloned from."""
    base_url = os.environ.get(ENV)
    if not base_url:
        yield None
        return
    template = f"loaxa_template_{worker_id}_{uuid.uuid4().hex[:6]}"
    admin = _admin(base_url)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{template}"'))
    engine = make_engine(_url_for(base_url, template))
    create_tables(engine)
    engine.dispose()
    try:
        yield template
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(autouse=True)
def _server_database(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    base_url = os.environ.get(ENV)
    folder = request.path.parent.name
    if not base_url or folder not in SERVER_TEST_FOLDERS:
        yield
        return
    template = request.getfixturevalue("_postgres_template")
    with postgres_database(base_url, "loaxa_test", template) as url:
        monkeypatch.setenv("LOAXA_DATABASE_URL", url)
        yield
